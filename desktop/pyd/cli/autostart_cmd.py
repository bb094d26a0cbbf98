"""`pyd autostart enable|disable|status [-n NAME]`: start an instance at login, in the user's
own scope (pyd.autostart)."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from pyd.autostart import manager
from pyd.cli.render import err_console, out_console
from pyd.config.settings import DEFAULT_INSTANCE, validate_name
from pyd.instance.registry import instance, name_option

app = typer.Typer(
    help="Start an instance at login (launchd, systemd --user, Task Scheduler).",
    no_args_is_help=True,
)
NameOpt = Annotated[str, typer.Option("--name", "-n", help="instance name")]
NOT_ENABLED = 3  # status: installed and loaded is 0; as `systemctl is-enabled`, else non-zero


@app.command()
def enable(name: NameOpt = DEFAULT_INSTANCE) -> None:
    """Run `pyd start` for the instance at each login, and start it now."""
    validate_name(name)
    s = manager.enable(manager.this_host(), name)
    err_console.print(f"start at login is on for {name!r}: {s.where}", soft_wrap=True)
    err_console.print(
        f"the instance starts now in the background; `pyd status{name_option(name)}` follows it"
    )
    if not instance(name).exists:
        err_console.print(f"note: {name!r} does not exist yet: that first start creates it")


@app.command()
def disable(name: NameOpt = DEFAULT_INSTANCE) -> None:
    """Stop starting the instance at login (a running instance keeps running)."""
    validate_name(name)
    before = manager.disable(manager.this_host(), name)
    if before.installed:
        err_console.print(f"start at login is off for {name!r}: removed {before.where}")
    else:
        err_console.print(f"start at login was not on for {name!r}; nothing to remove")


@app.command()
def status(
    name: NameOpt = DEFAULT_INSTANCE,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Whether the instance starts at login: its job installed, and loaded. Exit 0 when both."""
    validate_name(name)
    s = manager.status(manager.this_host(), name)
    if as_json:
        out_console.print_json(json.dumps({**dataclasses.asdict(s), "enabled": s.enabled}))
    else:
        out_console.print(_describe(s), soft_wrap=True, markup=False)
    if not s.enabled:
        raise typer.Exit(NOT_ENABLED)


def _describe(s: manager.Status) -> str:
    installed = f"installed: {s.where}" if s.installed else f"not installed ({s.where})"
    loaded = "loaded" if s.loaded else f"not loaded: {s.why_not}"
    line = f"{s.instance}: {installed}; {loaded}"
    if s.installed and not s.current:
        line += (
            "\nit was written for another pyd or environment (PATH, PYD_HOME) than this "
            f"shell's: `pyd autostart enable{name_option(s.instance)}` writes it again"
        )
    return line
