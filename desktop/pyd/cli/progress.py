"""Progress on the terminal: for the lifecycle, a spinner on the running phase and a line
with its duration when it ends; for downloads, a bar per file with bytes, rate and time left."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.status import Status

from pyd.cli.render import err_console

LABELS = {
    "image": "guest image",
    "disks": "disks and seed",
    "vm": "VM defined+started",
    "resume": "paused VM resumed",
    "save": "VM memory saved",
    "restore": "suspended VM restored",
    "vm-delete": "VM removed",
    "ssh": "boot to SSH",
    "engine": "Docker engine",
    "agent": "host agent",
    "shutdown": "guest shutdown",
    "files": "instance files",
}


class TerminalProgress:
    def __init__(self) -> None:
        self._status: Status | None = None

    def begin(self, phase: str) -> None:
        self._stop_spinner()
        self._status = err_console.status(f"{LABELS.get(phase, phase)} …")
        self._status.start()

    def done(self, phase: str, seconds: float) -> None:
        self._stop_spinner()
        err_console.print(f"[green]✓[/] {LABELS.get(phase, phase):<19} {seconds:6.2f} s")

    def info(self, message: str) -> None:
        err_console.print(f"  {message}")

    def close(self) -> None:
        self._stop_spinner()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


TransferFn = Callable[[str, int, int], None]  # (file name, bytes so far, total)


@contextlib.contextmanager
def transfer_bars() -> Iterator[tuple[TransferFn, Callable[[str], None]]]:
    """(transfer, info): `transfer` draws a bar per file; `info` prints a line above the
    bars, a WARNING in bold red. The bars go when the block ends."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def transfer(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        def info(line: str) -> None:
            style = "[bold red]" if line.startswith("WARNING") else ""
            bar.console.print(f"{style}{escape(line)}", soft_wrap=True)

        yield transfer, info


def timed_lines() -> Callable[[str], None]:
    """Prints each line on stderr after the seconds since this was called."""
    started = time.monotonic()

    def line(text: str) -> None:
        err_console.print(f"[dim]{time.monotonic() - started:6.1f}s[/] {text}", soft_wrap=True)

    return line
