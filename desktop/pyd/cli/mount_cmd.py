"""`pyd mount add|ls|rm`: host directories shared into the guest (kept in config.toml), and
their state as the host agent reports it.

A running host agent watches config.toml and mounts or unmounts within about a second, so
add and rm only edit the file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Annotated

import typer

from pyd.cli.agent_report import JsonOpt, agent_report, print_listing
from pyd.cli.config_edit import edit_config, when_applied
from pyd.cli.render import err_console
from pyd.config.settings import (
    DEFAULT_INSTANCE,
    InstanceConfig,
    with_mount_added,
    with_mount_removed,
)
from pyd.config.store import load_config
from pyd.errors import UsageError
from pyd.host.env import this_host
from pyd.mounts.shares import Share, host_location, make_share, suggested_mount_point
from pyd.mounts.state import MountState, MountStatus

app = typer.Typer(
    help="Share host directories with the guest, and list the shares.", no_args_is_help=True
)
NameOpt = Annotated[str, typer.Option("--name", "-n", help="instance name")]

COLUMNS = ("LOCATION", "MOUNT POINT", "MODE", "STATE", "DETAIL")
LISTING = "pyd mount ls"
REMOVED = "removed from config.toml; the host agent unmounts it"


@app.command()
def add(
    path: Annotated[str, typer.Argument(help="the host directory to share, e.g. . or ~/src")],
    ro: Annotated[bool, typer.Option("--ro", help="read-only in the guest")] = False,
    mount_point: Annotated[
        str | None,
        typer.Option(
            "--mount-point",
            help="where the guest sees it; by default the same path (C:\\Users\\me is /c/Users/me)",
        ),
    ] = None,
    name: NameOpt = DEFAULT_INSTANCE,
) -> None:
    """Share a host directory with the guest, now and at every start."""
    host = this_host()

    def added(cfg: InstanceConfig) -> InstanceConfig:
        location = host_directory(path)
        try:
            share = make_share(location, host, mount_point, writable=not ro)
        except UsageError as e:
            if mount_point is not None:
                raise
            # The user gave no mount point: say where the one that failed came from.
            other = suggested_mount_point(location)
            raise UsageError(
                f"{e.message} (a share's mount point is by default its own path)",
                hint=f"give it another: `pyd mount add {path} --mount-point {other}`",
            ) from None
        return with_mount_added(cfg, share)

    edit = edit_config(name, added)
    share = edit.after.mounts[-1]
    err_console.print(
        f"added {share.location} (at {share.mount_point} in the guest, {_mode(share)}); "
        f"{when_applied(edit.inst, LISTING)}",
        soft_wrap=True,
    )


@app.command()
def rm(
    target: Annotated[
        str, typer.Argument(help="the share's host directory, or its mount point in the guest")
    ],
    name: NameOpt = DEFAULT_INSTANCE,
) -> None:
    """Stop sharing a directory (the host's files are untouched)."""
    host = this_host()
    try:
        location: str | None = host_location(os.path.abspath(os.path.expanduser(target)), host)
    except UsageError:
        location = None  # not a host path (a guest path on Windows): a mount point, maybe
    edit = edit_config(name, lambda cfg: with_mount_removed(cfg, target, location))
    (share,) = (s for s in edit.before.mounts if s not in edit.after.mounts)
    err_console.print(
        f"removed {share.location} (at {share.mount_point}); {when_applied(edit.inst, LISTING)}",
        soft_wrap=True,
    )


@app.command()
def ls(name: NameOpt = DEFAULT_INSTANCE, as_json: JsonOpt = False) -> None:
    """List the shares with their state."""
    report = agent_report(name)
    shares = load_config(report.inst.files.config).mounts
    reported = report.status.mounts if report.status is not None else None
    state, detail = report.unreported()
    listed = mount_listing(shares, reported, MountState(state), detail)
    print_listing(listed, mount_rows, as_json, report, "its shares are mounted while it runs")


def host_directory(path: str) -> str:
    """`path` made absolute, if it is a directory. Links are not resolved: docker is given
    paths as the user types them, so the guest must know the directory by that name."""
    absolute = os.path.abspath(os.path.expanduser(path))
    shown = repr(path) if absolute == path else f"{path!r} ({absolute})"
    if not os.path.exists(absolute):
        raise UsageError(
            f"{shown} does not exist",
            hint="give a directory on this machine, e.g. `pyd mount add ~/src`",
        )
    if not os.path.isdir(absolute):
        raise UsageError(
            f"{shown} is not a directory",
            hint=f"share the directory that holds it: `pyd mount add {os.path.dirname(absolute)}`",
        )
    return absolute


def mount_listing(
    shares: Sequence[Share],
    reported: Sequence[MountStatus] | None,
    state: MountState,
    detail: str = "",
) -> list[MountStatus]:
    """Every configured share, in the file's order, with the state the agent reports for it
    (`state` and `detail` when it reports none); then those the agent still reports that
    config.toml no longer has, which it is about to unmount."""
    left = {(m.location, m.mount_point, m.writable): m for m in reported or ()}
    rows = []
    for s in shares:
        found: MountStatus | None = left.pop((s.location, s.mount_point, s.writable), None)
        rows.append(found or MountStatus(s.location, s.mount_point, s.writable, state, detail))
    return rows + [dataclasses.replace(m, detail=REMOVED) for m in left.values()]


def mount_rows(mounts: Sequence[MountStatus]) -> list[list[str]]:
    """The table `pyd mount ls` prints: the header, then one row per share as given."""
    return [
        list(COLUMNS),
        *([m.location, m.mount_point, _mode(m), m.state, m.detail] for m in mounts),
    ]


def _mode(share: Share | MountStatus) -> str:
    return "writable" if share.writable else "read-only"
