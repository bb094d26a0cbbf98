"""`pyd image publish`: cached images written as a static release tree that any web server,
object store or release page can host:

    OUTDIR/index.json              every image published there (image/index.py)
    OUTDIR/index.json.sig          its ed25519 signature (image/signing.py), with --sign
    OUTDIR/ARCH-HASH/manifest.json what the client's cache will hold, with packed forms
    OUTDIR/ARCH-HASH/<files>       packed where that pays (NAME.zst), plain otherwise

The rootfs is re-written uncompressed (`qemu-img convert -O qcow2`) before it is packed: the
cache's qcow2 compresses each 64 KiB cluster on its own, which zstd cannot improve on, while
the uncompressed disk packs to ~25 % with a long window (bench/image_size.py). The manifest
describes the uncompressed qcow2, so the client's cache holds it and needs no qemu-img.

Every file appears atomically (a temp name, then a rename) so a server never serves half a
file; manifests are written after their files and index.json after the manifests. Publishing
again into the same OUTDIR merges: other images stay listed, an image published again is
replaced, and its files are re-used when they are still the ones its manifest names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pyd.errors import ImageError, UsageError
from pyd.image import qemu_img
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.digest import sha256_file
from pyd.image.index import (
    INDEX,
    SIGNATURE,
    ImageIndex,
    IndexEntry,
    entry_for,
    load_index,
    parse_index,
    render_index,
)
from pyd.image.manifest import MANIFEST, FileEntry, Manifest, parse_manifest
from pyd.image.packing import MIN_SAVING, SUFFIX, pack
from pyd.image.qemu_img import run_qemu_img
from pyd.image.signing import SignatureError, sign

PublishProgress = Callable[[str], None]  # one line per step
ROOTFS = "rootfs.qcow2"
_TMP = ".publish-"


def publish(
    cache: ImageCache,
    outdir: Path,
    keys: Sequence[str],
    sign_key: Ed25519PrivateKey | None,
    progress: PublishProgress,
) -> ImageIndex:
    """Publishes the cached images `keys` (all of them when empty) into `outdir`; the index
    now there (merged with the one that was)."""
    images = _images(cache, keys)
    if outdir.exists() and not outdir.is_dir():
        raise UsageError(f"{outdir} is a file", hint="give a directory (it is created if missing)")
    root = cache.root.resolve()
    if root == outdir.resolve() or root in outdir.resolve().parents:
        # The tree's image directories would be the cache's: a publish deletes what it
        # does not name there and replaces files under instances' disks.
        raise UsageError(
            f"{outdir} is inside the image cache ({cache.root}); nothing was published",
            hint="publish into a directory outside the cache",
        )
    outdir.mkdir(parents=True, exist_ok=True)
    old = _old_index(outdir, sign_key)
    entries = {(e.arch, e.recipe_hash): e for e in old.images}
    for image in images:
        entry = publish_image(image, outdir, progress)
        entries[(entry.arch, entry.recipe_hash)] = entry  # replaced in place, or appended
    index = ImageIndex(tuple(entries.values()))
    data = render_index(index)
    _write_atomic(outdir / INDEX, data)
    if sign_key is not None:
        _write_atomic(outdir / SIGNATURE, sign(data, sign_key))
    else:
        # A signature of an older index would only make clients refuse this one.
        (outdir / SIGNATURE).unlink(missing_ok=True)
    return index


def publish_image(image: CachedImage, outdir: Path, progress: PublishProgress) -> IndexEntry:
    """One image's directory in the tree; its index entry."""
    dest = outdir / image.key
    dest.mkdir(exist_ok=True)
    previous = _previous(dest)
    files: dict[str, FileEntry] = {}
    for name, entry in sorted(image.manifest.files.items()):
        started = time.monotonic()
        reused = previous.get(name) if previous else None
        if reused and _still_there(dest, name, reused, entry):
            files[name] = reused
            progress(f"{image.key}/{name}: already published ({_mb(reused.transfer_size)})")
            continue
        files[name] = _publish_file(image.file(name), name, entry, dest, progress)
        f = files[name]
        how = f"packed {_mb(f.size)} → {_mb(f.transfer_size)}" if f.packed else _mb(f.size)
        progress(f"{image.key}/{name}: {how} in {time.monotonic() - started:.1f}s")
    manifest = replace(image.manifest, files=files)
    text = manifest.to_json().encode()
    _write_atomic(dest / MANIFEST, text)
    wanted = {MANIFEST, *files, *(f.packed.name for f in files.values() if f.packed)}
    for stale in dest.iterdir():  # files an earlier publish left that nothing names now
        if stale.name not in wanted and not stale.name.startswith("."):
            stale.unlink()
    return entry_for(
        manifest, text, f"{image.key}/{MANIFEST}", download_size=manifest.download_size
    )


def _publish_file(
    src: Path, name: str, entry: FileEntry, dest: Path, progress: PublishProgress
) -> FileEntry:
    with _scratch(dest) as tmp:
        if name == ROOTFS and _rewritable_qcow2(src):
            progress(f"{dest.name}/{name}: re-writing it uncompressed (qemu-img convert)")
            plain = tmp / name
            _qemu_img("convert", "-O", "qcow2", str(src), str(plain))
            entry = FileEntry(plain.stat().st_size, sha256_file(plain))
            src = plain
        progress(f"{dest.name}/{name}: packing {_mb(entry.size)}")
        # One thread: zstd's workers each start a window afresh (x86 rootfs 154 MB, not 148).
        packed = pack(src, tmp / (name + SUFFIX))
        if packed.size <= entry.size * (1 - MIN_SAVING):
            os.replace(tmp / packed.name, dest / packed.name)
            (dest / name).unlink(missing_ok=True)  # a plain copy an earlier publish left
            return replace(entry, packed=packed)
        _place_plain(src, dest / name, tmp)
        return FileEntry(entry.size, entry.sha256)


def _place_plain(src: Path, final: Path, tmp: Path) -> None:
    """A copy of the cached file (copy_file_range on Linux: no bytes through Python), renamed
    into place so the name never shows a partial file. Not a hard link: a tree edited in
    place would change the cached base image under instances' disks."""
    temp = tmp / (final.name + ".plain")
    shutil.copyfile(src, temp)
    os.replace(temp, final)


def _still_there(dest: Path, name: str, published: FileEntry, cached: FileEntry) -> bool:
    """The published file (or its packed form) is still the one its manifest names, made
    from the cached file: re-used rather than packed again."""
    if published.packed is None:
        if (published.size, published.sha256) != (cached.size, cached.sha256):
            return False
        return _digest_matches(dest / name, published.size, published.sha256)
    if name != ROOTFS and (published.size, published.sha256) != (cached.size, cached.sha256):
        return False  # the rootfs is published re-written: its digest is not the cache's
    p = published.packed
    return _digest_matches(dest / p.name, p.size, p.sha256)


def _digest_matches(path: Path, size: int, sha256: str) -> bool:
    try:
        return path.stat().st_size == size and sha256_file(path) == sha256
    except OSError:
        return False


def _previous(dest: Path) -> dict[str, FileEntry] | None:
    """The files the image's earlier publish named, when its manifest is readable."""
    try:
        manifest: Manifest = parse_manifest((dest / MANIFEST).read_text(), str(dest / MANIFEST))
    except (OSError, UnicodeDecodeError, ImageError):
        return None
    return manifest.files


def _images(cache: ImageCache, keys: Sequence[str]) -> list[CachedImage]:
    if not keys:
        images = cache.entries()
        if not images:
            raise ImageError(
                f"there is no image in the cache ({cache.root}) to publish",
                hint="build one with `pyd image build`",
            )
        return images
    found = []
    for key in dict.fromkeys(keys):
        image = cache.get(key)
        if image is None:
            known = ", ".join(e.key for e in cache.entries()) or "none"
            raise UsageError(
                f"no cached image {key!r} (cached: {known})", hint="`pyd image ls` lists them"
            )
        found.append(image)
    return found


def _old_index(outdir: Path, sign_key: Ed25519PrivateKey | None) -> ImageIndex:
    """The index already in `outdir` (its entries are kept), or an empty one. Signing a merged
    index vouches for every entry it keeps: with `sign_key`, the old index must carry that
    key's signature, or an entry anyone who can write OUTDIR added would become trusted."""
    try:
        data = (outdir / INDEX).read_bytes()
        signature = (outdir / SIGNATURE).read_bytes() if sign_key else None
    except FileNotFoundError as e:
        if Path(e.filename).name == INDEX:
            return ImageIndex(())
        signature = None
    except OSError as e:
        raise ImageError(f"cannot read {e.filename}: {e.strerror or e}") from None
    try:
        if sign_key is None:
            return parse_index(data, str(outdir / INDEX))
        return load_index(data, signature, [sign_key.public_key()], origin=str(outdir / INDEX))[0]
    except SignatureError as e:
        raise ImageError(
            f"{e.message} (a signed merge would vouch for every image it lists)",
            hint=f"remove {outdir / INDEX} to start a new index (the images it lists are no "
            "longer offered), or publish into an empty directory",
        ) from None
    except ImageError as e:
        raise ImageError(
            f"{e.message}; publishing would lose the images it lists",
            hint=f"repair or remove {outdir / INDEX}, or publish into another directory",
        ) from None


def _rewritable_qcow2(path: Path) -> bool:
    """A qcow2 (its clusters may be compressed, which packs badly) that qemu-img can re-write."""
    with path.open("rb") as f:
        if f.read(4) != b"QFI\xfb":
            return False
    # Without qemu-img it is published as it is; bench/image_size.py says what that costs.
    return qemu_img.available()


def _qemu_img(*args: str) -> None:
    done = run_qemu_img(*args)
    if done.returncode != 0:
        raise ImageError(
            f"qemu-img {args[0]} failed: {done.stderr.strip() or done.returncode}",
            hint="check the cached image with `pyd image verify`",
        )


@contextlib.contextmanager
def _scratch(dest: Path) -> Iterator[Path]:
    """A temp directory next to the files (same filesystem: placing one is a rename)."""
    path = Path(tempfile.mkdtemp(prefix=_TMP, dir=dest))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(prefix=_TMP, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide it from a web server's user
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
