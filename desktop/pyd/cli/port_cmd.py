"""`pyd port add|ls|rm`: manual forwards (kept in config.toml) and what the agent forwards.

A running host agent watches config.toml and applies a change within about a second, so
add and rm only edit the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated

import typer

from pyd.cli.agent_report import JsonOpt, agent_report, print_listing
from pyd.cli.config_edit import edit_config, when_applied
from pyd.cli.render import err_console
from pyd.config.settings import (
    DEFAULT_INSTANCE,
    InstanceConfig,
    with_forward_added,
    with_forward_removed,
)
from pyd.config.store import load_config
from pyd.host.loopback import address_text
from pyd.ports.forwards import PortState, PortStatus, parse_port_spec

app = typer.Typer(
    help="Forward host ports to the guest, and list the forwards.", no_args_is_help=True
)
NameOpt = Annotated[str, typer.Option("--name", "-n", help="instance name")]
NewSpec = Annotated[
    str,
    typer.Argument(
        help="[HOSTIP:]HOSTPORT:GUESTPORT[/udp], e.g. 8080:80 (127.0.0.1:8080 on this machine "
        "to port 80 in the guest), 0.0.0.0:8080:80 (every interface) or 5353:53/udp"
    ),
]
HeldSpec = Annotated[
    str,
    typer.Argument(
        help="the forward as `pyd port ls` shows it (127.0.0.1:8080:80), or its host port: "
        "8080, 127.0.0.1:8080"
    ),
]

COLUMNS = ("HOST", "GUEST", "PROTO", "ORIGIN", "STATE", "DETAIL")
LISTING = "pyd port ls"


@app.command()
def add(spec: NewSpec, name: NameOpt = DEFAULT_INSTANCE) -> None:
    """Forward a host port to a port in the guest, now and at every start."""
    edit = edit_config(name, lambda cfg: with_forward_added(cfg, spec))
    (added,) = edit.after.port_forwards[len(edit.before.port_forwards) :]
    f = parse_port_spec(added)
    where = f"host {address_text(f.host_ip, f.host_port)} to guest port {f.guest_port}"
    err_console.print(
        f"added {added} ({where}); {when_applied(edit.inst, LISTING)}", soft_wrap=True
    )


@app.command()
def rm(spec: HeldSpec, name: NameOpt = DEFAULT_INSTANCE) -> None:
    """Remove a forward added with `pyd port add`."""
    edit = edit_config(name, lambda cfg: with_forward_removed(cfg, spec))
    (removed,) = set(edit.before.port_forwards) - set(edit.after.port_forwards)
    err_console.print(f"removed {removed}; {when_applied(edit.inst, LISTING)}", soft_wrap=True)


@app.command()
def ls(name: NameOpt = DEFAULT_INSTANCE, as_json: JsonOpt = False) -> None:
    """List the forwards: Docker's published ports and manual ones, with their state."""
    report = agent_report(name)
    if report.status is not None:
        ports = report.status.ports
    else:
        state, detail = report.unreported()
        ports = configured_ports(load_config(report.inst.files.config), PortState(state), detail)
    print_listing(
        sorted_ports(ports),
        port_rows,
        as_json,
        report,
        "these are its manual forwards; the ports that containers publish are forwarded "
        "while it runs",
    )


def configured_ports(
    cfg: InstanceConfig, state: PortState, detail: str = ""
) -> tuple[PortStatus, ...]:
    """The manual forwards of `cfg` as `ls` shows them when no agent reports on them."""
    # The agent's own spelling of a forward; imported here, as paramiko comes with it and
    # would add a fifth of a second to every other pyd command.
    from pyd.ports.manager import port_status

    return tuple(port_status(parse_port_spec(spec), state, detail) for spec in cfg.port_forwards)


def sorted_ports(ports: Iterable[PortStatus]) -> list[PortStatus]:
    """By host port, then address, protocol and origin: a port's IPv4 and IPv6 listeners,
    and the forwards that conflict over it, come out next to each other."""

    def key(p: PortStatus) -> tuple[int, str, str, str]:
        port = p.host.rpartition(":")[2]
        return (int(port) if port.isdigit() else 0, p.host, p.proto, p.origin)

    return sorted(ports, key=key)


def port_rows(ports: Sequence[PortStatus]) -> list[list[str]]:
    """The table `pyd port ls` prints: the header, then one row per forward as given."""
    return [
        list(COLUMNS),
        *([p.host, p.guest, p.proto, p.origin, p.state, p.detail] for p in ports),
    ]
