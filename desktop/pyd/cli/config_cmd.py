"""`pyd config show|set`."""

from __future__ import annotations

import json
from typing import Annotated

import tomlkit
import typer

from pyd.cli.render import err_console, out_console
from pyd.config.settings import DEFAULT_INSTANCE, to_toml_dict, with_value
from pyd.config.store import edit_config, load_config
from pyd.errors import UsageError
from pyd.host.private_files import instance_dir
from pyd.instance.registry import existing, instance
from pyd.lifecycle.status import instance_status

app = typer.Typer(help="Show or change an instance's settings.", no_args_is_help=True)
NameOpt = Annotated[str, typer.Option("--name", "-n", help="instance name")]


@app.command()
def show(
    name: NameOpt = DEFAULT_INSTANCE,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print the effective settings (defaults filled in)."""
    cfg = load_config(existing(name).files.config)
    data = to_toml_dict(cfg)
    if as_json:
        out_console.print_json(json.dumps(data))
    else:
        out_console.out(tomlkit.dumps(data), end="")


@app.command("set")
def set_(
    key: Annotated[
        str, typer.Argument(help="cpus, memory, disk, accel, backend, libvirt_uri, ports.bind")
    ],
    value: Annotated[str, typer.Argument()],
    name: NameOpt = DEFAULT_INSTANCE,
    create: Annotated[
        bool, typer.Option("--create", help="make the instance (stopped) when it is new")
    ] = False,
) -> None:
    """Change a setting; it applies at the next start."""
    inst = instance(name)
    with_value(load_config(inst.files.config), key, value)  # a bad value fails first
    if not create:
        existing(name, create=f"pyd config set --create {key} {value}")  # a mistyped -n
    if key == "disk" and inst.files.data_disk.exists():
        raise UsageError(
            f"the data disk of {name!r} already exists; its size is fixed at creation",
            hint="`pyd delete` and start again for another size",
        )
    running = inst.exists and instance_status(inst).vm_exists
    if running and key in ("backend", "libvirt_uri"):
        # stop/status/delete find the VM through these: changing them now would orphan it.
        raise UsageError(
            f"{name!r} is running; {key} can only change while it is stopped",
            hint=f"`pyd stop -n {name}` first",
        )
    if not inst.exists:
        instance_dir(inst.files.root)
    edit_config(inst.files.config, lambda cfg: with_value(cfg, key, value))
    if running and key.startswith("ports."):
        err_console.print("saved; the running instance applies it now (`pyd port ls`)")
    elif running and key == "network.host_dns":  # the agent follows config.toml
        err_console.print("saved; the running instance applies it now")
    elif running:
        err_console.print(f"saved; applies at the next start (`pyd restart -n {name}`)")
    else:
        err_console.print("saved")
