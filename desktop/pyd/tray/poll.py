"""Following the instances cheaply: every second the tray stats the files pyd's processes
write at each change (the keeper's status, the suspend save, the restore marker, state and
config; of the agent's status, what the state comes from) and reads the instances' states
only when one of them changed, or after REFRESH seconds (a VM that ended with no agent to
see it). A look at a few files is microseconds; a read is `pyd list --json`, the CLI's own
answer, in a process of its own (~0.4 s of CPU): the tray then loads neither libvirt nor
the image code, and holds no lock of an instance even for the instant `pyd status` takes to
probe one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from pyd.agent.status_file import read_status
from pyd.errors import PydError
from pyd.host.detached import no_window
from pyd.instance import files as names
from pyd.lifecycle.run_state import RunState
from pyd.tray.model import InstanceView

POLL = 1.0  # seconds between looks at the files
REFRESH = 300.0  # seconds after which the states are read whatever the files say
LIST_TIMEOUT = 60.0  # a libvirtd that does not answer: the tray keeps its last views

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

Stamp = tuple[object, ...]
Fingerprint = tuple[tuple[str, Stamp], ...]


def fingerprint(instances_root: Path, watched: Iterable[str] = WATCHED) -> Fingerprint:
    """A stamp of each watched file that exists, and of the instances' directory (an instance
    made or deleted): equal fingerprints, nothing to read again."""
    found: list[tuple[str, Stamp]] = []
    paths = [instances_root]
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(instances_root), key=lambda e: e.name):
            paths += [Path(entry.path) / name for name in watched]
    for path in paths:
        stamp = _stamp(path)
        if stamp is not None:
            found.append((str(path), stamp))
    return tuple(found)


def _stamp(path: Path) -> Stamp | None:
    """(mtime_ns, size); for the agent's status what a state depends on: it is rewritten for
    many things (ports, shares, the data disk's use, platforms) that change no state, and each
    read of the states costs ~0.4 s of CPU. None when the file is not there."""
    if path.name == names.AGENT_STATUS:
        status = read_status(path)
        if status is None:
            return None if not path.exists() else ("unreadable",)
        return (status.state, status.pid, status.launch, status.error, status.vm)
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def parse_list(text: str) -> list[InstanceView]:
    """`pyd list --json`'s output as the tray's views; a state this version does not know
    reads as unknown (shown as an error, with Start and Stop off)."""
    views = []
    for row in json.loads(text):
        try:
            state = RunState(row["state"])
        except ValueError:
            state = RunState.UNKNOWN
        views.append(InstanceView(str(row["name"]), state, str(row.get("error") or "")))
    return views


def read_views(python: str, env: Mapping[str, str]) -> list[InstanceView]:
    """The instances as `pyd list --json` sees them now."""
    flags = no_window(sys.platform)
    r = subprocess.run(
        [python, "-m", "pyd", "list", "--json"],
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=LIST_TIMEOUT,
        creationflags=flags.creationflags,
        check=False,
    )
    if r.returncode != 0:
        raise PydError(f"`pyd list --json` failed (exit {r.returncode}): {r.stderr.strip()}")
    try:
        return parse_list(r.stdout)
    except (ValueError, KeyError, TypeError) as e:
        raise PydError(f"`pyd list --json` said something unexpected ({e})") from None
