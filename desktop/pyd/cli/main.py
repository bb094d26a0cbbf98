"""The `pyd` command: subcommands, global options and the single error boundary."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pyd.cli import (  # noqa: F401 (image commands register on image_cmd.app)
    autostart_cmd,
    config_cmd,
    docker_cmd,
    doctor_cmd,
    image_cmd,
    image_release_cmd,
    image_store_cmd,
    instance_cmd,
    mount_cmd,
    port_cmd,
    shim_cmd,
    tray_cmd,
    upgrade_cmd,
    version_cmd,
)
from pyd.cli.boundary import EXPECTED, expected_failure
from pyd.cli.render import print_error
from pyd.errors import PydError, UsageError

app = typer.Typer(
    help="Run the Docker engine in a small Linux VM and use it from this machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion (bash, zsh, fish, PowerShell). A completion
    # request runs `pyd` with no arguments, so it goes through here, never pyd.cli.entry's
    # pass-through: `pyd docker`'s start-up stays free of typer.
    add_completion=True,
)
app.add_typer(image_cmd.app, name="image")
app.add_typer(config_cmd.app, name="config")
app.add_typer(port_cmd.app, name="port")
app.add_typer(mount_cmd.app, name="mount")
app.add_typer(shim_cmd.app, name="shim")
app.add_typer(autostart_cmd.app, name="autostart")
for _command in (
    instance_cmd.start,
    instance_cmd.stop,
    instance_cmd.suspend,
    instance_cmd.restart,
    instance_cmd.status,
    instance_cmd.delete,
    instance_cmd.ssh,
    instance_cmd.env,
    instance_cmd.logs,
    upgrade_cmd.upgrade,
    doctor_cmd.doctor,
    version_cmd.version,
    tray_cmd.tray,
):
    app.command()(_command)
app.command("list")(instance_cmd.list_)
for _name, _passthrough in (("docker", docker_cmd.docker), ("compose", docker_cmd.compose)):
    app.command(
        _name,
        cls=docker_cmd.PassThrough,
        context_settings=docker_cmd.SETTINGS,
        add_help_option=False,
    )(_passthrough)

_state = {"debug": False}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """The typer CLI (`pyd docker` and `pyd compose` usually start in pyd.cli.entry, without
    it): expected failures print a message + hint and exit 1 or 2."""
    args = sys.argv[1:] if argv is None else argv
    _state["debug"] = "--debug" in args
    try:
        # Without standalone mode, click returns typer.Exit's code instead of exiting.
        # prog_name: `python -m pyd` is pyd too (usage lines, completion scripts).
        result = app(args=args, prog_name="pyd", standalone_mode=False)
    except typer.Abort:
        print_error(PydError("aborted"))
        sys.exit(1)
    except EXPECTED as e:
        failure = expected_failure(e, _state["debug"])
        if failure is None:
            raise
        sys.exit(failure)
    except Exception as e:
        # typer ships its own copy of click, so its exceptions are recognised by shape:
        # ClickException (usage errors, exit 2) has format_message(); Exit has exit_code.
        code = getattr(e, "exit_code", None)
        if code is None:
            raise
        if hasattr(e, "format_message"):
            print_error(UsageError(e.format_message(), hint="see `pyd --help`"))
            sys.exit(2 if code == 2 else 1)
        sys.exit(code)
    sys.exit(result if isinstance(result, int) else 0)
