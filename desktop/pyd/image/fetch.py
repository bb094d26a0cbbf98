"""`pyd image fetch URL`: a prebuilt image (manifest.json + files) from a web server, for
hosts that cannot run mmdebstrap (macOS, Windows). Each file arrives through
image/transfer.py (resume, retries, mirrors) and is checked against the manifest; any
mismatch refuses the whole image and nothing reaches the cache.

Partial files wait in one place, the cache's `.staging-partial/`, named by the sha256 they
should end with: a fetch that was cut resumes from them next time, and a fetch of another
image cleans them away (under the cache lock, so never one that is in use)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO

from pyd.errors import ImageError, ImageMismatchError, UsageError
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.manifest import MANIFEST, FileEntry, Manifest, Packed, parse_manifest
from pyd.image.packing import Unpacker
from pyd.image.transfer import DEFAULT_POLICY, ProgressFn, RetryPolicy, download

Progress = Callable[[str, int, int], None]  # (file name, bytes so far, total)
PARTIAL_DIR = ".staging-partial"
_MAX_MANIFEST = 1 << 20
_TIMEOUT = 60


def manifest_url(url: str) -> str:
    """The manifest's URL, given it or the directory that holds it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "file"):
        raise UsageError(f"cannot fetch {url!r}", hint="give an http://, https:// or file:// URL")
    if parts.path.endswith(".json"):
        return url
    return urllib.parse.urljoin(url if url.endswith("/") else url + "/", MANIFEST)


def fetch_image(
    cache: ImageCache,
    url: str,
    progress: Progress,
    *,
    mirrors: Sequence[str] = (),
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> CachedImage:
    """The image whose manifest `url` (then each of `mirrors`) serves, fetched into the
    cache unless it is there already."""
    murls = [manifest_url(u) for u in (url, *mirrors)]
    murl, text = _read_manifest(murls)
    manifest = parse_manifest(text, origin=murl)
    bases = [murl, *(m for m in murls if m != murl)]  # the one that answered first
    return fetch_files(cache, manifest, bases, progress, policy=policy, sleep=sleep)


def fetch_files(
    cache: ImageCache,
    manifest: Manifest,
    bases: Sequence[str],
    progress: Progress,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> CachedImage:
    """The image `manifest` describes (already checked: parsed, and matched to a signed
    index where there is one), its files fetched relative to each of `bases` in turn (the
    manifest's URL on each mirror) into the cache unless it is there already."""
    murl = bases[0]
    key = image_key(manifest.arch, manifest.recipe_hash)
    if existing := cache.get(key):
        return existing
    with cache.locked():
        # Another pull of the same image may have committed it while we waited for the lock.
        if existing := cache.get(key):
            return existing
        partials = cache.root / PARTIAL_DIR
        _clean_partials(partials, {_wire(n, e)[1].sha256 for n, e in manifest.files.items()})
        partials.mkdir(mode=0o700, exist_ok=True)
        parts: dict[str, Path] = {}
        try:
            # Verified files stay among the partials until the last one is: a fetch cut in
            # the middle of the image keeps them, and the next one checks them again (and
            # unpacks a packed one again, from the partial) and goes on.
            with cache.staging() as staging:
                _download_and_unpack(
                    manifest, bases, partials, parts, staging, progress, policy, sleep
                )
                placed: dict[Path, Path] = {}
                for name, part in parts.items():
                    if manifest.files[name].packed:
                        continue
                    if part in placed:  # two names, one content: one partial served both
                        shutil.copyfile(placed[part], staging / name)
                        continue
                    os.replace(part, staging / name)
                    placed[part] = staging / name
                image = cache.commit(staging, key, replace(manifest, source=murl))
        except ImageMismatchError:
            _clean_partials(partials, set())  # the image is refused: none of it is kept
            raise
        _clean_partials(partials, set())
        return image


def _download_and_unpack(
    manifest: Manifest,
    bases: Sequence[str],
    partials: Path,
    parts: dict[str, Path],
    staging: Path,
    progress: Progress,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
) -> None:
    """Every file into `partials` (`parts` is filled with where), the packed ones also
    unpacked into `staging` as they arrive (packing.Unpacker: the unpack ends with the
    download, not ~1.5 s after it). Each unpacked file is accepted once its packed bytes
    verified and it matches the manifest, after the last download: a decoder still busy
    with the rootfs goes on while the next files download."""
    unpackers: list[Unpacker] = []
    try:
        for name, entry in sorted(manifest.files.items()):
            # A packed file travels (and resumes) packed: its partial is named by the
            # packed digest, and the unpacked output is never resumed, only made again.
            wire_name, wire = _wire(name, entry)
            parts[name] = partials / f"{wire.sha256}.part"
            unpacker = Unpacker(staging / name, entry, name=name) if entry.packed else None
            if unpacker:
                unpackers.append(unpacker)
            download(
                [urllib.parse.urljoin(b, wire_name) for b in bases],
                parts[name],
                wire.size,
                wire.sha256,
                name=wire_name,
                progress=_per_file(progress, name),
                policy=policy,
                sleep=sleep,
                sink=unpacker,
            )
        for unpacker in unpackers:
            unpacker.finish()  # a refusal is raised here
    finally:
        for unpacker in unpackers:
            unpacker.close()  # nothing writes into staging any more


def _wire(name: str, entry: FileEntry) -> tuple[str, FileEntry | Packed]:
    """The name and (size, sha256) a file travels under: its packed form when it has one."""
    return (entry.packed.name, entry.packed) if entry.packed else (name, entry)


def _per_file(progress: Progress, name: str) -> ProgressFn:
    return lambda p: progress(name, p.done, p.total)


def _clean_partials(partials: Path, keep: set[str]) -> None:
    """Removes partial files of other images: they are resumed from or dropped, never
    left to pile up."""
    if not partials.is_dir():
        return
    for path in partials.iterdir():
        if path.name.removesuffix(".part") not in keep:
            path.unlink(missing_ok=True)
    if not keep:
        partials.rmdir()


def _read_manifest(murls: Sequence[str]) -> tuple[str, str]:
    """(URL, text) of the first manifest a mirror serves; a dead mirror is skipped."""
    errors: list[ImageError] = []
    for murl in murls:
        try:
            return murl, _read_small(murl)
        except ImageError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise ImageError(
        "no mirror served the manifest: " + "; ".join(e.message for e in errors),
        hint="check the URLs and the network",
    )


def _open(url: str) -> IO[bytes]:
    try:
        response: IO[bytes] = urllib.request.urlopen(url, timeout=_TIMEOUT)
        return response
    except urllib.error.HTTPError as e:
        raise ImageError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ImageError(
            f"cannot reach {url}: {reason}", hint="check the URL and the network"
        ) from None


def _read_small(url: str) -> str:
    with _open(url) as r:
        data: bytes = r.read(_MAX_MANIFEST + 1)
    if len(data) > _MAX_MANIFEST:
        raise ImageError(f"{url} is too large to be a manifest")
    return data.decode("utf-8", errors="replace")
