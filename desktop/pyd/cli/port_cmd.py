"""`pyd port add|ls|rm`: manual forwards (kept in config.toml) and what the agent forwards.

A running host agent watches config.toml and applies a change within about a second, so
add and rm only edit the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Annotated

import typer

from pyd.agent.status import PortStatus
from pyd.cli.render import err_console, out_console, print_columns
from pyd.config.model import InstanceConfig, with_forward_added, with_forward_removed
from pyd.config.store import load_config, save_config
from pyd.lifecycle.agent_proc import agent_running, agent_status
from pyd.lifecycle.instance import DEFAULT, Instance, existing
from pyd.ports.model import parse_port_spec

app = typer.Typer(
    help="Forward host ports to the guest, and list the forwards.", no_args_is_help=True
)
NameOpt = Annotated[str, typer.Option("--name", "-n", help="instance name")]

COLUMNS = ("HOST", "GUEST", "PROTO", "ORIGIN", "STATE", "DETAIL")
STOPPED = "stopped"  # a manual forward of an instance whose agent is not running
UNKNOWN = "unknown"  # the agent runs but has not written its status yet


@app.command()
def add(
    spec: Annotated[
        str,
        typer.Argument(
            help="[HOSTIP:]HOSTPORT:GUESTPORT, e.g. 8080:80 (127.0.0.1:8080 on this machine to "
            "port 80 in the guest) or 0.0.0.0:8080:80 (every interface)"
        ),
    ],
    name: NameOpt = DEFAULT,
) -> None:
    """Forward a host port to a port in the guest, now and at every start."""
    inst = existing(name)
    before = load_config(inst.files.config)
    cfg = with_forward_added(before, spec)
    save_config(inst.files.config, cfg)
    (added,) = cfg.port_forwards[len(before.port_forwards) :]
    f = parse_port_spec(added)
    err_console.print(
        f"added {added} (host {_address(f.host_ip, f.host_port)} to guest port "
        f"{f.guest_port}); {_applies(inst)}",
        soft_wrap=True,
    )


@app.command()
def rm(
    spec: Annotated[
        str,
        typer.Argument(
            help="the forward as `pyd port ls` shows it (127.0.0.1:8080:80), or its host "
            "port: 8080, 127.0.0.1:8080"
        ),
    ],
    name: NameOpt = DEFAULT,
) -> None:
    """Remove a forward added with `pyd port add`."""
    inst = existing(name)
    before = load_config(inst.files.config)
    cfg = with_forward_removed(before, spec)
    save_config(inst.files.config, cfg)
    (removed,) = (s for s in before.port_forwards if s not in cfg.port_forwards)
    err_console.print(f"removed {removed}; {_applies(inst)}", soft_wrap=True)


@app.command()
def ls(
    name: NameOpt = DEFAULT,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the forwards: Docker's published ports and manual ones, with their state."""
    inst = existing(name)
    running = agent_running(inst.files)
    status = agent_status(inst.files) if running else None
    if status is not None:
        ports = status.ports
    else:
        cfg = load_config(inst.files.config)
        if running:
            ports = configured_ports(cfg, UNKNOWN, "the host agent has not reported yet")
        else:
            ports = configured_ports(cfg, STOPPED)
    ordered = sorted_ports(ports)
    if as_json:
        out_console.print_json(json.dumps([asdict(p) for p in ordered]))
        return
    print_columns(port_rows(ordered))
    if not running:
        err_console.print(
            f"{name!r} is not running (no host agent): these are its manual forwards; the "
            "ports that containers publish are forwarded while it runs",
            soft_wrap=True,
        )


def _applies(inst: Instance) -> str:
    if agent_running(inst.files):
        return "applied to the running instance (`pyd port ls` shows its state)"
    return "applies at the next start"


def configured_ports(
    cfg: InstanceConfig, state: str, detail: str = ""
) -> tuple[PortStatus, ...]:
    """The manual forwards of `cfg` as `ls` shows them when no agent reports on them."""
    rows = []
    for spec in cfg.port_forwards:
        f = parse_port_spec(spec)
        rows.append(
            PortStatus(
                host=_address(f.host_ip, f.host_port),
                guest=_address(f.guest_ip, f.guest_port),
                proto=f.proto,
                origin=f.origin,
                state=state,
                detail=detail,
            )
        )
    return tuple(rows)


def sorted_ports(ports: Iterable[PortStatus]) -> list[PortStatus]:
    """By host port, then address, protocol and origin: a port's IPv4 and IPv6 listeners,
    and the forwards that conflict over it, come out next to each other."""

    def key(p: PortStatus) -> tuple[int, str, str, str]:
        port = p.host.rpartition(":")[2]
        return (int(port) if port.isdigit() else 0, p.host, p.proto, p.origin)

    return sorted(ports, key=key)


def port_rows(ports: Iterable[PortStatus]) -> list[list[str]]:
    """The table `pyd port ls` prints: the header, then one row per forward as given."""
    return [
        list(COLUMNS),
        *([p.host, p.guest, p.proto, p.origin, p.state, p.detail] for p in ports),
    ]


def _address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
