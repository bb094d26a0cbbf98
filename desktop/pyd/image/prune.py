"""`pyd image prune`: which cached images no instance needs, and removing them.

The decision (`plan`) is pure. What an instance needs is read from its directory
(`instance_use`) without trusting any single file: the image key in state.json, any image
key another *.json names (a kept pre-upgrade disk's record, say), and the backing file of
every qcow2 disk there (an OS disk is an overlay on an image's rootfs.qcow2; a start that
made the disk but not yet state.json is seen this way). Whatever cannot be read protects
every image of the instance's architecture, or every image when that is unknown too:
prune never guesses.

The cache is shared by every PYD_HOME, so an instance also leaves a record in the cache
(`record_use`, .users/<sha256 of its directory>.json) when it takes an image: prune reads
the directories records name as it reads this home's (`recorded_uses`), and a record whose
directory is gone is stale. The record's own image counts only while its OS disk does not
exist yet (a start between choosing the image and making the disk); once it does, the
disk's backing file says which image it needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pyd.errors import ImageError
from pyd.host.atomicfile import write_atomic
from pyd.image.cache import ImageCache
from pyd.image.fetch import PARTIAL_DIR
from pyd.image.manifest import MANIFEST, parse_manifest

KEY = re.compile(r"([a-z0-9_]{1,32})-[0-9a-f]{16}")  # cache.image_key: ARCH-HASH16
_STAGING = ".staging-"
_QCOW2_MAGIC = b"QFI\xfb"
_MAX_JSON = 1 << 20
USERS_DIR = ".users"  # in the cache root: never an image key, a staging dir or a leftover


@dataclass(frozen=True)
class Use:
    """The images one instance needs."""

    instance: str
    keys: frozenset[str] = frozenset()
    unsure_arch: str | None = None  # something unreadable: keep every image of this arch
    unsure_all: bool = False  # ...and its arch is unknown too: keep every image
    why: str = ""  # what could not be read


@dataclass(frozen=True)
class Cached:
    key: str
    arch: str
    size: int


@dataclass(frozen=True)
class Plan:
    remove: tuple[Cached, ...]
    keep: tuple[tuple[Cached, str], ...]  # (image, why it is kept)

    @property
    def freed(self) -> int:
        return sum(c.size for c in self.remove)


def plan(images: Sequence[Cached], uses: Sequence[Use]) -> Plan:
    """Removes exactly the images no instance may need."""
    remove: list[Cached] = []
    keep: list[tuple[Cached, str]] = []
    for image in images:
        reasons = [r for r in (_reason(u, image) for u in uses) if r]
        if reasons:
            keep.append((image, "; ".join(reasons)))
        else:
            remove.append(image)
    return Plan(tuple(remove), tuple(keep))


def _reason(use: Use, image: Cached) -> str:
    if image.key in use.keys:
        return f"used by {use.instance}"
    if use.unsure_all or use.unsure_arch == image.arch:
        return f"{use.instance} may use it ({use.why})"
    return ""


@dataclass(frozen=True)
class UseRecord:
    """An instance directory using the cache (any PYD_HOME), as `record_use` wrote it."""

    path: Path  # the record file
    instance_dir: Path
    image: str
    os_disk: Path
    state: Path
    arch: Path


def _record_path(cache_root: Path, instance_dir: Path) -> Path:
    digest = hashlib.sha256(str(instance_dir.resolve()).encode()).hexdigest()
    return cache_root / USERS_DIR / f"{digest}.json"


def record_use(cache_root: Path, key: str, os_disk: Path, state: Path, arch: Path) -> None:
    """Before an OS disk is made on image `key` (or booted on it): the directory of
    `os_disk` uses the cache. Atomic; unchanged records are not rewritten."""
    root = os_disk.parent.resolve()
    data = {
        "instance_dir": str(root),
        "image": key,
        "os_disk": str(root / os_disk.name),
        "state": str(root / state.name),
        "arch": str(root / arch.name),
    }
    text = json.dumps(data, indent=2) + "\n"
    path = _record_path(cache_root, root)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    try:
        write_atomic(path, text)
    except FileNotFoundError:  # the last record's removal took the directory meanwhile
        write_atomic(path, text)


def forget_use(cache_root: Path, instance_dir: Path) -> None:
    """`pyd delete`: the instance no longer uses the cache."""
    _forget(_record_path(cache_root, instance_dir))


def _forget(record: Path) -> None:
    """No empty directory is left behind: a cache nothing uses holds nothing of it."""
    record.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty
        record.parent.rmdir()


def _parse_record(path: Path) -> UseRecord:
    data = json.loads(_read(path, _MAX_JSON))
    fields = ("instance_dir", "image", "os_disk", "state", "arch")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        raise ValueError("not a use record")
    if not KEY.fullmatch(data["image"]):
        raise ValueError(f"{data['image']!r} is not an image key")
    paths = [Path(data[f]) for f in fields if f != "image"]
    if not all(p.is_absolute() for p in paths):
        raise ValueError("a path in it is not absolute")
    return UseRecord(path, paths[0], data["image"], *paths[1:])


def recorded_uses(cache_root: Path, seen: Path) -> tuple[list[Use], list[UseRecord]]:
    """(what the instances the cache's records name need, the stale records: their
    directory is gone). Directories inside `seen` (this home's instances, read already)
    only have their record checked for staleness."""
    users = cache_root / USERS_DIR
    try:
        paths = sorted(p for p in users.iterdir() if p.suffix == ".json")
    except OSError:
        return [], []
    seen_root = Path(os.path.realpath(seen))
    uses: list[Use] = []
    stale: list[UseRecord] = []
    for path in paths:
        try:
            record = _parse_record(path)
        except (OSError, ValueError) as e:
            # Which directory it named is unknown: nothing may be taken on a guess.
            why = f"cannot read the use record {path}: {_why(e)}; remove it if no instance uses it"
            uses.append(Use(path.name, unsure_all=True, why=why))
            continue
        if not record.instance_dir.is_dir():
            stale.append(record)
            continue
        if record.instance_dir.parent == seen_root:
            continue
        use = instance_use(record.instance_dir, record.state, record.arch, cache_root)
        keys = use.keys if record.os_disk.exists() else use.keys | {record.image}
        uses.append(replace(use, instance=str(record.instance_dir), keys=frozenset(keys)))
    return uses, stale


def forget_stale(record: UseRecord) -> None:
    """Removes a stale record, unless its directory came back meanwhile (a new start)."""
    with contextlib.suppress(OSError, ValueError):
        if not _parse_record(record.path).instance_dir.is_dir():
            _forget(record.path)


def open_uses(cache_root: Path, proc: Path = Path("/proc")) -> list[Use]:
    """Processes holding a file of a cached image open (Linux; elsewhere none are seen):
    a VM of an instance under another PYD_HOME sharing this cache, or a `pyd image
    boot-check`, whose instance directories prune cannot see."""
    root = os.path.realpath(cache_root) + os.sep
    found: dict[int, set[str]] = {}
    try:
        pids = [int(p.name) for p in proc.iterdir() if p.name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            fds = list((proc / str(pid) / "fd").iterdir())
        except OSError:
            continue  # gone, or another user's
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            key = target[len(root) :].split(os.sep, 1)[0] if target.startswith(root) else ""
            if KEY.fullmatch(key):
                found.setdefault(pid, set()).add(key)
    return [Use(f"process {pid} ({_comm(proc, pid)})", frozenset(k)) for pid, k in found.items()]


def _comm(proc: Path, pid: int) -> str:
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return "?"


def instance_use(root: Path, state: Path, arch: Path, cache_root: Path) -> Use:
    """What the instance directory `root` needs: `state` is its state.json, `arch` the
    file naming its guest architecture."""
    keys: set[str] = set()
    problems: list[str] = []
    found_arch: str | None = None
    try:
        children = sorted(p for p in root.iterdir() if p.is_file())
    except OSError as e:
        children = []
        problems.append(f"cannot list {root}: {e.strerror}")
    for path in children:
        if path.suffix == ".json":
            try:
                data = json.loads(_read(path, _MAX_JSON))
            except (OSError, ValueError) as e:
                problems.append(f"cannot read {path.name}: {_why(e)}")
                continue
            keys.update(s for s in _strings(data) if KEY.fullmatch(s))
            if path == state:
                key, found_arch = _state_key(data)
                if key is None:
                    problems.append(f"{path.name} names no image")
        else:
            try:
                backing = qcow2_backing(path)
            except OSError as e:
                problems.append(f"cannot read {path.name}: {e.strerror}")
                continue
            # qemu reads a relative backing name from the overlay's own directory.
            if backing is not None and (key := _cache_key(root / backing, cache_root)):
                keys.add(key)
    if not problems:
        return Use(root.name, frozenset(keys))
    if found_arch is None:
        try:
            found_arch = _read(arch, 64).decode("ascii").strip() or None
        except (OSError, UnicodeDecodeError):
            found_arch = None
    why = "; ".join(problems)
    if found_arch is None:
        return Use(root.name, frozenset(keys), None, True, why)
    return Use(root.name, frozenset(keys), found_arch, False, why)


def _state_key(data: object) -> tuple[str | None, str | None]:
    """(image key, arch) of a state.json's data; None for what it does not say."""
    if not isinstance(data, dict):
        return None, None
    key, arch = data.get("image_key"), data.get("arch")
    key = key if isinstance(key, str) and KEY.fullmatch(key) else None
    arch = arch if isinstance(arch, str) and arch else None
    if arch is None and key is not None:
        arch = key.rsplit("-", 1)[0]
    return key, arch


def _strings(data: object) -> Iterable[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for v in data.values():
            yield from _strings(v)
    elif isinstance(data, list):
        for v in data:
            yield from _strings(v)


def qcow2_backing(path: Path) -> str | None:
    """The backing file a qcow2 header names (offset 8: its offset, 16: its length), or
    None for a file that is not qcow2 or has no backing file."""
    with path.open("rb") as f:
        header = f.read(20)
        if len(header) < 20 or header[:4] != _QCOW2_MAGIC:
            return None
        offset = int.from_bytes(header[8:16], "big")
        size = int.from_bytes(header[16:20], "big")
        if offset == 0 or not 0 < size <= 1023:  # qcow2 caps the name at 1023 bytes
            return None
        f.seek(offset)
        return f.read(size).decode("utf-8", errors="replace")


def _cache_key(backing: Path, cache_root: Path) -> str | None:
    """The image key of a backing file inside the cache (ROOT/KEY/rootfs.qcow2)."""
    parent = Path(os.path.abspath(backing)).parent
    root = Path(os.path.abspath(cache_root))
    if parent.parent == root or parent.parent.resolve() == root.resolve():
        return parent.name
    return None


def cached_images(cache: ImageCache) -> list[Cached]:
    """Every image directory in the cache, damaged ones too (their arch from the key)."""
    if not cache.root.is_dir():
        return []
    found = []
    for path in sorted(cache.root.iterdir()):
        m = KEY.fullmatch(path.name)
        if not m or not path.is_dir():
            continue
        arch = m.group(1)  # a damaged entry's key still says its arch
        with contextlib.suppress(OSError, ImageError):
            arch = parse_manifest((path / MANIFEST).read_text(), str(path / MANIFEST)).arch
        found.append(Cached(path.name, arch, _size(path)))
    return found


def leftovers(cache: ImageCache) -> list[Path]:
    """Staging directories and partial downloads: only ever leftovers while the cache
    lock is held (builds and fetches hold it while they use them)."""
    if not cache.root.is_dir():
        return []
    return sorted(
        p for p in cache.root.iterdir() if p.name.startswith(_STAGING) or p.name == PARTIAL_DIR
    )


def remove_image(cache: ImageCache, key: str) -> None:
    """Takes the entry out of the cache in one rename (no half-removed image is ever
    found), then deletes it. Call with the cache lock held."""
    grave = Path(tempfile.mkdtemp(prefix=_STAGING, dir=cache.root))
    os.replace(cache.root / key, grave / key)
    shutil.rmtree(grave)


def remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def size_of(path: Path) -> int:
    return _size(path) if path.is_dir() else path.stat().st_size


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):  # gone meanwhile
                total += (Path(dirpath) / name).lstat().st_size
    return total


def _read(path: Path, cap: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ValueError("too large")
    return data


def _why(e: Exception) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return "not valid JSON" if isinstance(e, json.JSONDecodeError) else str(e)
