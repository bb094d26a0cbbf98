"""Following the instances cheaply: every second the tray stats the files pyd's processes
write at each change (the agent's and keeper's status, the suspend save, the restore marker,
state and config) and reads the instances' states, the CLI's own way (lifecycle/status.py),
only when one of them changed, or after REFRESH seconds (a VM that ended with no agent to see
it). A stat of a few files is microseconds; a state read asks the VM backend."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from pyd.errors import PydError
from pyd.instance import files as names
from pyd.instance.registry import Instance, all_instances
from pyd.lifecycle.status import RunState, instance_status
from pyd.tray.model import InstanceView

POLL = 1.0  # seconds between looks at the files
REFRESH = 30.0  # seconds after which the states are read whatever the files say

# What changes when an instance starts, stops, fails, suspends or resumes.
WATCHED = (
    names.AGENT_STATUS,
    names.KEEPER_STATUS,
    names.SUSPEND_SAVE,
    names.RESTORING,
    names.STATE,
    names.CONFIG,
    names.STOP_REQUEST,
    names.QEMU_PID,
)

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(instances_root: Path, watched: Iterable[str] = WATCHED) -> Fingerprint:
    """(path, mtime_ns, size) of each watched file that exists, and of the instances'
    directory (an instance made or deleted): equal fingerprints, nothing to read again."""
    found: list[tuple[str, int, int]] = []
    paths = [instances_root]
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(instances_root), key=lambda e: e.name):
            paths += [Path(entry.path) / name for name in watched]
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        found.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(found)


def view_of(inst: Instance) -> InstanceView:
    """One instance as the tray shows it; a damaged one is listed broken, as `pyd list` does."""
    try:
        st = instance_status(inst)
    except PydError as e:
        return InstanceView(inst.name, RunState.BROKEN, e.message)
    return InstanceView(st.name, st.state, st.error)


def views() -> list[InstanceView]:
    return [view_of(i) for i in all_instances()]
