"""A share's state: what the agent reports in its status file and `pyd mount ls` shows (a
StrEnum, so both print the bare value)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MountState(enum.StrEnum):
    MOUNTED = "mounted"
    MOUNTING = "mounting"  # being mounted, or waiting for SSH to come back after a drop
    FAILED = "failed"  # the last attempt failed (the detail says why); the worker tries again
    # Only in `pyd mount ls`, for a configured share the agent does not report on:
    UNKNOWN = "unknown"  # the agent runs but has not reported on it yet
    STOPPED = "stopped"  # no agent runs


@dataclass(frozen=True)
class MountStatus:
    """One share as `pyd mount ls` and `pyd status` show it."""

    location: str  # the host directory, absolute
    mount_point: str  # where the guest sees it
    writable: bool
    state: str  # a MountState's value
    detail: str = ""  # why, when not mounted
