"""Waiting for an idle guest between measurements, read from the host side (QEMU's CPU time
in /proc) so that the wait costs the guest nothing. Under emulation, work left over from one
measurement would otherwise land on whichever runs next."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads) so far; None when /proc cannot
    tell (no such process, or no /proc on this system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(qemu_pid: int, busy: float = 0.15, window: float = 0.25, limit: float = 20) -> None:
    """Waits until the guest is idle (QEMU under `busy` of a core over `window`), for at most
    `limit` seconds; a fixed second where QEMU's CPU time cannot be read."""
    deadline = time.monotonic() + limit
    before = cpu_seconds(qemu_pid)
    if before is None:
        time.sleep(1)
        return
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(qemu_pid)
        if now is None or now - before < busy * window:
            return
        before = now
