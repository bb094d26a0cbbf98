"""How errors and tables look on the terminal."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from pyd.errors import PydError

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)


def print_error(e: PydError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
    if e.hint:
        err_console.print(f"[yellow]hint:[/] {escape(e.hint)}", soft_wrap=True)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def print_columns(rows: list[list[str]]) -> None:
    """Plain aligned columns, never truncated: keys, paths and versions are what people
    copy from these listings."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
