"""A process named by its pid and its start time, so that a pid the OS gave to another
process after ours died is never mistaken for ours (Windows reuses pids quickly, and a host
reboot reuses them everywhere). psutil gives start times on Linux, macOS and Windows alike;
Windows has no /proc and no pidfile lock to lean on."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from pyd.host.private_files import write_private_text

# psutil derives Linux start times from boot time + clock ticks (10 ms); two reads of the
# same process agree exactly, but a margin costs nothing: another process started within
# it under the same pid is not possible.
SAME_START = 0.05


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    started: float  # start_time(): seconds since boot on Linux, since the epoch elsewhere

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "started": self.started})

    @classmethod
    def from_json(cls, text: str) -> ProcessIdentity | None:
        """None for anything that is not a record this module wrote."""
        try:
            data = json.loads(text)
            pid, started = data["pid"], data["started"]
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return None
        if not isinstance(started, (int, float)) or isinstance(started, bool):
            return None
        return cls(pid, float(started))


def start_time(proc: psutil.Process) -> float:
    """When `proc` started, in a clock that a step of the wall clock does not move. On Linux
    psutil's create_time() is boot time + start ticks, and the kernel's boot time moves
    with every wall-clock step (NTP after a laptop wakes): a record would then stop matching
    its own process and pyd stop would leave it running. The ticks since boot
    (/proc/PID/stat) do not move. macOS and Windows keep the start time as it was taken."""
    if sys.platform == "linux":
        ticks = _ticks_since_boot(proc.pid)
        if ticks is not None:
            return ticks / _CLOCK_TICKS
    return proc.create_time()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _ticks_since_boot(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # starttime, field 22 of proc(5); fields here begin at 3
    except (OSError, IndexError, ValueError):
        return None


def identify(pid: int) -> ProcessIdentity | None:
    """The running process `pid` with its start time; None when none runs (or a zombie)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return ProcessIdentity(pid, start_time(proc))
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def is_running(identity: ProcessIdentity) -> bool:
    """The very process `identity` recorded still runs (not merely some process with its pid)."""
    now = identify(identity.pid)
    return now is not None and abs(now.started - identity.started) < SAME_START


def write_identity(path: Path, identity: ProcessIdentity) -> None:
    write_private_text(path, identity.to_json() + "\n")


def read_identity(path: Path) -> ProcessIdentity | None:
    """The record at `path`; None when it is missing or unreadable."""
    try:
        return ProcessIdentity.from_json(path.read_text(encoding="utf-8"))
    except OSError:
        return None
