"""A process named by its pid and its start time, so that a pid the OS gave to another
process after ours died is never mistaken for ours (Windows reuses pids quickly, and a host
reboot reuses them everywhere). psutil gives start times on Linux, macOS and Windows alike;
Windows has no /proc and no pidfile lock to lean on."""

from __future__ import annotations

import json
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
    started: float  # seconds since the epoch, as psutil.Process.create_time() says

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


def identify(pid: int) -> ProcessIdentity | None:
    """The running process `pid` with its start time; None when none runs (or a zombie)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return ProcessIdentity(pid, proc.create_time())
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
