"""`pyd image export KEY FILE` / `pyd image import FILE`: an image for a machine without
network, as one plain tar holding a one-image release tree (index.json, its signature,
KEY/manifest.json and the files, some packed): what `pyd image publish` writes.

Import trusts the archive no more than a server: the tar's members are checked before any
byte is written (regular files and directories only, names that stay inside the tree, a
size cap), extracted next to the cache, and the image is then taken from the tree through
the same checks as a download (signature, index, manifest, every file). Whatever is
refused leaves nothing behind, in the cache or next to it.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pyd.errors import ImageError, UsageError
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.fetch import Progress, fetch_files
from pyd.image.index import (
    INDEX,
    MAX_INDEX,
    MAX_MANIFEST,
    SIGNATURE,
    ImageIndex,
    check_manifest,
    check_manifest_bytes,
    load_index,
    safe_path,
)
from pyd.image.manifest import parse_manifest
from pyd.image.publish import PublishProgress, publish
from pyd.image.signing import SIGNATURE_SIZE

MAX_MEMBERS = 64
MAX_FILE = 8 << 30  # a rootfs is ~1 GB unpacked; packed files are smaller
MAX_TOTAL = 16 << 30
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_CHUNK = 1 << 20


class ArchiveError(ImageError):
    """The file is not an image archive pyd accepts: refused before anything is kept."""


def write_archive(tree: Path, dest: Path) -> None:
    """The files under `tree` as a plain tar at `dest`, written under a temporary name and
    renamed: a cut export never leaves a truncated archive that looks whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(p for p in tree.rglob("*") if p.is_file()):
                info = tar.gettarinfo(str(path), arcname=path.relative_to(tree).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_archive(
    cache: ImageCache,
    key: str,
    dest: Path,
    sign_key: Ed25519PrivateKey | None,
    progress: PublishProgress,
) -> ImageIndex:
    """The cached image `key` as an archive at `dest`: published (packed, signed with
    `sign_key` when given) into a scratch tree next to `dest`, then tarred."""
    if cache.get(key) is None:
        raise ImageError(f"no cached image {key!r}", hint="`pyd image ls` lists them")
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory", hint="give the archive's file name")
    parent = dest.absolute().parent
    if not parent.is_dir():
        raise UsageError(f"{parent} does not exist", hint="give a path in an existing directory")
    with tempfile.TemporaryDirectory(prefix=".pyd-export-", dir=parent) as tmp:
        index = publish(cache, Path(tmp) / "tree", [key], sign_key, progress)
        write_archive(Path(tmp) / "tree", dest)
    return index


def check_members(members: Sequence[tarfile.TarInfo], origin: str) -> list[tarfile.TarInfo]:
    """The regular files to extract; ArchiveError for any member that is not a plain file
    or directory inside the tree, a name given twice, or sizes past the caps."""
    if len(members) > MAX_MEMBERS:
        raise ArchiveError(f"{origin} holds {len(members)} members; an image archive has a few")
    seen: set[str] = set()
    files = []
    total = 0
    for m in members:
        name = m.name.removeprefix("./").rstrip("/") if m.isdir() else m.name
        parts = name.split("/")
        if len(parts) > 2 or not all(_COMPONENT.fullmatch(p) for p in parts):
            raise ArchiveError(f"{origin}: member {m.name!r} would leave the image tree")
        if m.isdir():
            continue
        if not m.isreg():
            raise ArchiveError(f"{origin}: member {m.name!r} is not a regular file ({_kind(m)})")
        if name in seen:
            raise ArchiveError(f"{origin}: member {m.name!r} is there twice")
        if m.size > MAX_FILE:
            raise ArchiveError(f"{origin}: member {m.name!r} is {m.size} bytes, too large")
        seen.add(name)
        total += m.size
        files.append(m)
    if total > MAX_TOTAL:
        raise ArchiveError(f"{origin} unpacks to {total} bytes, more than an image")
    if INDEX not in seen:
        raise ArchiveError(f"{origin} has no {INDEX}: it is not an image archive")
    return files


def extract_archive(src: Path, into: Path) -> None:
    """The checked members of `src` written under `into` (which exists and is empty)."""
    try:
        with tarfile.open(src, "r:") as tar:
            for m in check_members(tar.getmembers(), str(src)):
                tarfile.data_filter(m, str(into))  # the stdlib's own check, on top of ours
                dest = into / m.name
                dest.parent.mkdir(exist_ok=True)
                reader = tar.extractfile(m)
                assert reader is not None  # a regular file
                with reader, dest.open("xb") as out:
                    _copy(reader, out, m.size)
    except (tarfile.TarError, EOFError) as e:
        raise ArchiveError(
            f"{src} is not a readable image archive ({e})",
            hint="make one with `pyd image export KEY FILE`; a cut copy is refused",
        ) from None
    except OSError as e:
        raise ArchiveError(f"cannot read {src}: {e.strerror or e}") from None


def _copy(reader: IO[bytes], out: IO[bytes], size: int) -> None:
    left = size
    while left:
        chunk = reader.read(min(_CHUNK, left))
        if not chunk:
            raise tarfile.ReadError("the archive ends inside a file")
        out.write(chunk)
        left -= len(chunk)


def _kind(m: tarfile.TarInfo) -> str:
    if m.issym():
        return f"a symlink to {m.linkname!r}"
    if m.islnk():
        return f"a hard link to {m.linkname!r}"
    return "a device or fifo" if m.isdev() else f"type {m.type!r}"


def import_archive(
    cache: ImageCache,
    src: Path,
    keys: Sequence[Ed25519PublicKey],
    progress: Progress,
    *,
    insecure: bool = False,
    info: Callable[[str], None] = print,
) -> CachedImage:
    """The image in the archive `src`, into the cache, checked exactly as a download."""
    if not src.is_file():
        raise ArchiveError(f"{src} is not a file", hint="give the path of an exported archive")
    # Next to the cache (its filesystem: the space an image needs), not inside it, where
    # `pyd image prune` would take a staging directory for a leftover.
    cache.root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".pyd-import-", dir=cache.root.parent))
    try:
        tree = work / "tree"
        tree.mkdir()
        extract_archive(src, tree)
        return _take(cache, tree, keys, progress, insecure, info, str(src))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _take(
    cache: ImageCache,
    tree: Path,
    keys: Sequence[Ed25519PublicKey],
    progress: Progress,
    insecure: bool,
    info: Callable[[str], None],
    origin: str,
) -> CachedImage:
    """The chain a download goes through (image/pull.py), on the extracted tree: the
    index's signature over its bytes, then the index, the manifest against the index's
    digest, every file against the manifest. Not pull itself: that keeps the index it
    verified as the cache's view of the release, and an archive's is not the release's."""
    sig_path = tree / SIGNATURE
    index, verdict = load_index(
        _small(tree / INDEX, MAX_INDEX),
        _small(sig_path, SIGNATURE_SIZE * 16) if sig_path.exists() else None,
        keys,
        origin=f"{origin}: {INDEX}",
        insecure=insecure,
    )
    info(f"WARNING: {verdict.warning}" if verdict.warning else f"{origin}: signed by {verdict.key}")
    if len(index.images) != 1:
        raise ArchiveError(f"{origin} holds {len(index.images)} images; an export holds one")
    entry = index.images[0]
    mpath = tree / safe_path(entry.manifest)
    if not mpath.is_file():
        raise ArchiveError(f"{origin} has no {entry.manifest}, which its index names")
    data = _small(mpath, MAX_MANIFEST)
    check_manifest_bytes(entry, data, f"{origin}: {entry.manifest}")  # before parsing, as pull
    manifest = parse_manifest(data.decode("utf-8", errors="replace"), origin=str(mpath))
    check_manifest(entry, data, manifest, f"{origin}: {entry.manifest}")
    return fetch_files(cache, manifest, [mpath.as_uri()], progress)


def _small(path: Path, cap: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(cap + 1)
    if len(data) > cap:
        raise ArchiveError(f"{path.name} is larger than any {path.name} ({cap} bytes)")
    return data
