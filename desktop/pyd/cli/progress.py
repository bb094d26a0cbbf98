"""Lifecycle progress on the terminal: a spinner on the running phase, a line with its
duration when it ends."""

from __future__ import annotations

from rich.status import Status

from pyd.cli.render import err_console

LABELS = {
    "image": "guest image",
    "disks": "disks and seed",
    "vm": "VM defined+started",
    "resume": "paused VM resumed",
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
