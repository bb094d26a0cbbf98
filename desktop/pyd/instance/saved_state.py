"""The record of a suspended instance (suspend.json beside the save file suspend.save): what
the saved VM was booted with, and the disks as the save left them. `pyd start` resumes the
save only when what it would boot now is the same (`differences`, pure) and the disks are
untouched since (`disks_changed`): a VM restored onto disks that another boot wrote to would
corrupt them."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pyd.errors import PydError
from pyd.host.atomicfile import write_atomic


@dataclass(frozen=True)
class Shape:
    """What a save can only be restored onto: the same machine, as `pyd start` would boot it."""

    image_key: str  # the image the OS disk's base is
    cpus: int
    memory_mib: int
    arch: str
    backend: str  # libvirt or qemu
    emulator: str  # QEMU's version, e.g. 8.2.2


@dataclass(frozen=True)
class DiskStamp:
    """A disk as the save left it: any boot after the save changes at least its mtime."""

    inode: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class SavedState:
    shape: Shape
    saved_at: str  # ISO 8601, UTC
    disks: dict[str, DiskStamp]  # file name in the instance directory -> its stamp
    # The agent was ready, the engine answering, at the save: a resume's agent need not wait
    # for the engine (it runs on from the saved memory). False in records made before it.
    engine_ready: bool = False


_LABELS = {
    "image_key": "image",
    "cpus": "CPUs",
    "memory_mib": "memory",
    "arch": "architecture",
    "backend": "backend",
    "emulator": "QEMU version",
}


def _shown(field: str, value: object) -> str:
    if field == "memory_mib" and isinstance(value, int):
        return f"{value / 1024:g} GiB" if value % 1024 == 0 else f"{value} MiB"
    return str(value)


def differences(saved: Shape, now: Shape) -> list[str]:
    """Pure: each setting that differs, as "memory 2 GiB -> 4 GiB"; empty when the save can
    be resumed as it is."""
    old, new = asdict(saved), asdict(now)
    return [
        f"{_LABELS[k]} {_shown(k, old[k])} -> {_shown(k, new[k])}" for k in old if old[k] != new[k]
    ]


def stamp(path: Path) -> DiskStamp:
    st = path.stat()
    return DiskStamp(st.st_ino, st.st_size, st.st_mtime_ns)


def disks_changed(saved: SavedState, root: Path) -> list[str]:
    """The disks (file names) that are missing or not as the save left them."""
    changed = []
    for name, was in saved.disks.items():
        try:
            now = stamp(root / name)
        except FileNotFoundError:
            changed.append(name)
            continue
        if now != was:
            changed.append(name)
    return changed


def to_text(saved: SavedState) -> str:
    return json.dumps(asdict(saved), indent=2) + "\n"


def parse_saved(text: str, origin: str) -> SavedState:
    try:
        data = json.loads(text)
        shape = data["shape"]
        return SavedState(
            shape=Shape(
                image_key=str(shape["image_key"]),
                cpus=int(shape["cpus"]),
                memory_mib=int(shape["memory_mib"]),
                arch=str(shape["arch"]),
                backend=str(shape["backend"]),
                emulator=str(shape["emulator"]),
            ),
            saved_at=str(data["saved_at"]),
            disks={
                str(name): DiskStamp(int(d["inode"]), int(d["size"]), int(d["mtime_ns"]))
                for name, d in dict(data["disks"]).items()
            },
            engine_ready=data.get("engine_ready", False) is True,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PydError(f"the suspend record {origin} is corrupted ({e})") from None


def load_saved(path: Path) -> SavedState | None:
    """None when there is none; PydError when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_saved(text, str(path))


def write_saved(path: Path, saved: SavedState) -> None:
    write_atomic(path, to_text(saved))  # 0600, as every new file write_atomic makes


def remove_saved(save: Path, record: Path) -> None:
    """The save first: a record without its save file means nothing."""
    save.unlink(missing_ok=True)
    record.unlink(missing_ok=True)


def set_aside(save: Path, aside: Path) -> None:
    """Keeps a save that must not be restored (it failed, or its disks changed) out of the
    way, never deleted: `pyd delete` removes it with the instance."""
    os.replace(save, aside)


RESTORE_GRACE = 120.0  # a restore takes ~1 s; a 16 GiB save on a slow disk, far longer
_RESTORING, _RESTORED, _ENGINE_READY = "restoring", "restored", "engine-ready"


@dataclass(frozen=True)
class RestoreMark:
    """What `pyd start` tells the agent it launched before restoring (InstanceFiles.restoring):
    the restore is under way, or over (the VM runs) and whether its engine answered at the
    save. Over, it stays until the agent has read it: an agent that comes up after a fast
    restore must still know the VM was restored, not booted."""

    done: bool
    engine_ready: bool = False


def mark_text(mark: RestoreMark) -> str:
    """Pure: the marker file's text for `mark`."""
    state = _RESTORED if mark.done else _RESTORING
    return f"{state} {_ENGINE_READY}\n" if mark.engine_ready else f"{state}\n"


def parse_mark(text: str) -> RestoreMark | None:
    """Pure: the mark in `text`; None for anything else (a marker cut short)."""
    words = text.split()
    if not words or words[0] not in (_RESTORING, _RESTORED):
        return None
    return RestoreMark(words[0] == _RESTORED, _ENGINE_READY in words[1:])


def write_mark(marker: Path, mark: RestoreMark) -> None:
    write_atomic(marker, mark_text(mark))  # whole or not at all: the agent polls it


def read_mark(marker: Path, now: float, grace: float = RESTORE_GRACE) -> RestoreMark | None:
    """The mark, when one was written less than `grace` seconds ago by wall clock `now`
    (one left by a killed `pyd start` keeps no agent waiting for ever); else None."""
    try:
        if now - marker.stat().st_mtime >= grace:
            return None
        return parse_mark(marker.read_text())
    except OSError:
        return None
