"""What `pyd upgrade` leaves while it swaps an instance's OS disk, so that an upgrade cut
short (pyd killed, the host down) is finished by the next `pyd start` or `pyd upgrade`.

The steps, each safe to stop after: (1) upgrade.json is written with the old state and the
new image's key (before the shutdown: `pyd image prune` keeps any image an instance's *.json
names, so the new image cannot go while the VM shuts down); (2) the VM is shut down; (3)
os.qcow2 is renamed os.qcow2.pre-upgrade; (4) a new os.qcow2 is made on the new image and
state.json names it; (5) boot and engine check; (6) upgrade.json says "committed"; (7) the
kept disk, then upgrade.json, are removed. Found uncommitted, the marker means: roll back
(the VM stopped, the kept disk and the old state put back). Found committed: only the
clean-up of (7) is left. The data disk is never part of it."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pyd.errors import PydError
from pyd.host.atomicfile import write_atomic
from pyd.instance.files import InstanceFiles
from pyd.instance.state import InstanceState, parse_state, save_state
from pyd.lifecycle.agent_proc import HostAgent
from pyd.lifecycle.progress import Progress, phase
from pyd.vm.backends.base import VMBackend

MARKER = "upgrade.json"
KEPT_OS_DISK = "os.qcow2.pre-upgrade"


@dataclass(frozen=True)
class UpgradeMarker:
    old_state: InstanceState
    new_image: str
    was_running: bool  # the VM ran before the upgrade: it runs again after a rollback
    committed: bool = False  # the new image booted and Docker answered


def kept_disk(files: InstanceFiles) -> Path:
    """The old OS disk while an upgrade runs: put back on a rollback."""
    return files.root / KEPT_OS_DISK


def write_marker(files: InstanceFiles, marker: UpgradeMarker) -> None:
    data = {
        "old_state": asdict(marker.old_state),
        "new_image": marker.new_image,
        "was_running": marker.was_running,
        "committed": marker.committed,
    }
    write_atomic(files.root / MARKER, json.dumps(data, indent=2) + "\n")


def read_marker(files: InstanceFiles) -> UpgradeMarker | None:
    path = files.root / MARKER
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return UpgradeMarker(
            old_state=parse_state(json.dumps(data["old_state"]), str(path)),
            new_image=str(data["new_image"]),
            was_running=bool(data["was_running"]),
            committed=bool(data.get("committed", False)),
        )
    except (ValueError, KeyError, TypeError, AttributeError, PydError) as e:
        raise PydError(
            f"the upgrade marker {path} is damaged ({e})",
            hint=f"if {files.root / KEPT_OS_DISK} exists, an upgrade was cut short: rename it "
            f"to os.qcow2 (replacing the new one) and set state.json's image_key back, then "
            f"remove {path}",
        ) from None


def commit_marker(files: InstanceFiles, marker: UpgradeMarker) -> None:
    """The new image works: from now on a cut leaves only clean-up to do."""
    write_marker(files, replace(marker, committed=True))
    clean_up(files)


def clean_up(files: InstanceFiles) -> None:
    kept_disk(files).unlink(missing_ok=True)
    (files.root / MARKER).unlink(missing_ok=True)


def put_back(files: InstanceFiles, marker: UpgradeMarker) -> None:
    """The old OS disk and state in place again (the VM must not run). Without a kept disk
    the cut came before the rename: os.qcow2 is still the old one."""
    kept = kept_disk(files)
    if kept.exists():
        os.replace(kept, files.os_disk)
    save_state(files.state, marker.old_state)
    (files.root / MARKER).unlink(missing_ok=True)


def finish_cut_upgrade(
    files: InstanceFiles, backend: VMBackend, agent: HostAgent, progress: Progress
) -> UpgradeMarker | None:
    """Under the instance lock, before anything looks at the VM: an upgrade cut short is
    rolled back (or, when committed, cleaned up). Returns the marker of a rollback done."""
    marker = read_marker(files)
    if marker is None:
        return None
    if marker.committed:
        clean_up(files)
        return None
    with phase(progress, "rollback"):
        # A VM booted on the new disk may still run (pyd was killed while it waited):
        # it must not hold the disk that is put back.
        agent.stop(files)
        if backend.state().exists:
            backend.kill()
        put_back(files, marker)
    progress.info(
        f"an upgrade to {marker.new_image} was cut short; rolled back to "
        f"{marker.old_state.image_key}"
    )
    return marker
