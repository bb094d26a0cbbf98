"""`pyd tray`: the status icon and its menu (pyd.tray); one command, for autostart too."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer


def tray(
    invoke: Annotated[
        str | None,
        typer.Option(
            "--invoke",
            metavar="INSTANCE/ITEM",
            help="activate a menu item of the running tray, e.g. default/stop "
            "(items: start, stop, restart, logs, copy-context; or quit)",
        ),
    ] = None,
) -> None:
    """Show pyd's status icon: running, starting, stopped or error, with a menu per instance
    (its state, Start, Stop, Restart, Open logs, Copy `docker context use ...`) and Quit."""
    from pyd.tray.app import request_invoke

    if invoke is not None:
        request_invoke(invoke)
        return
    # The tray lives for the whole session: in a process without the CLI's commands, typer
    # and rich (~10 MB less resident). Windows has no exec that keeps the process.
    argv = [sys.executable, "-m", "pyd.tray"]
    if sys.platform == "win32":
        raise typer.Exit(subprocess.call(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
