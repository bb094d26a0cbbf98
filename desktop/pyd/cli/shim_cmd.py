"""`pyd shim install|remove`: a `docker` command on PATH that runs `pyd docker`, for hosts
without a docker CLI (pyd.guestdocker.shim)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from pyd.cli.render import err_console
from pyd.config.settings import DEFAULT_INSTANCE, validate_name
from pyd.guestdocker.shim import DEFAULT_DIR, install_shim, remove_shim

app = typer.Typer(
    help="Put a `docker` command on PATH that runs `pyd docker` (for hosts without docker).",
    no_args_is_help=True,
)
DirOpt = Annotated[Path, typer.Option("--dir", help="where the shim goes (default ~/.local/bin)")]


@app.command()
def install(
    directory: DirOpt = DEFAULT_DIR,
    name: Annotated[
        str, typer.Option("--name", "-n", help="the instance the shim's docker uses")
    ] = DEFAULT_INSTANCE,
) -> None:
    """Write the `docker` shim, only where no other docker is on PATH."""
    validate_name(name)  # the instance may come later: the shim only names it
    # The interpreter pyd runs in: it keeps working whatever PATH holds later.
    launcher = [sys.executable, "-m", "pyd"]
    done = install_shim(
        directory.expanduser(),
        launcher,
        None if name == DEFAULT_INSTANCE else name,
        os.environ.get("PATH", os.defpath),
        sys.platform,
    )
    what = "updated" if done.replaced else "installed"
    err_console.print(f"{what} {done.path}: `docker ARGS` runs `pyd docker ARGS`", soft_wrap=True)
    if not done.on_path:
        err_console.print(
            f"[yellow]note:[/] {done.path.parent} is not on PATH; add it (e.g. in your shell's "
            "profile) so that `docker` finds the shim",
            soft_wrap=True,
        )


@app.command()
def remove(directory: DirOpt = DEFAULT_DIR) -> None:
    """Delete the shim; a docker that pyd did not write is never touched."""
    removed = remove_shim(directory.expanduser(), sys.platform)
    if removed is None:
        err_console.print(f"no shim in {directory.expanduser()}; nothing to remove")
    else:
        err_console.print(f"removed {removed}")
