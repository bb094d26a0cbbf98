"""`pyd upgrade`: an instance moved to the newest image, its data kept."""

from __future__ import annotations

from typing import Annotated

import typer

from pyd.cli.progress import TerminalProgress
from pyd.cli.render import err_console
from pyd.config.settings import DEFAULT_INSTANCE
from pyd.instance.registry import name_option


def upgrade(
    name: Annotated[str, typer.Option("--name", "-n", help="instance name")] = DEFAULT_INSTANCE,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="accept an unsigned or wrongly signed image index"),
    ] = False,
) -> None:
    """Move an instance to the newest image, keeping its containers, images and volumes."""
    from pyd.lifecycle.upgrade import upgrade as upgrade_instance

    progress = TerminalProgress()
    try:
        result = upgrade_instance(name, progress, insecure=insecure)
    except KeyboardInterrupt:
        progress.close()
        opt = name_option(name)
        err_console.print(
            "[yellow]interrupted:[/] if the OS disk was already swapped, the next "
            f"`pyd start{opt}` or `pyd upgrade{opt}` puts the old one back first (data disk "
            "untouched)",
            soft_wrap=True,
        )
        raise
    finally:
        progress.close()
    who = f"pyd instance {result.name!r}"
    if not result.changed:
        err_console.print(
            f"{who} already uses the newest image, {result.new_image}", soft_wrap=True
        )
        return
    err_console.print(
        f"[bold]{who} upgraded[/]: {result.old_image} → {result.new_image}; Docker answered "
        "on it with the same data disk (images, containers and volumes kept)",
        soft_wrap=True,
    )
    if not result.running:
        err_console.print("it was stopped before and is stopped again")
