"""`pyd image fetch URL`: a prebuilt image (manifest.json + files) from a web server, for
hosts that cannot run mmdebstrap (macOS, Windows). Every file is checked against the
manifest while it streams in; any mismatch refuses the whole image and nothing reaches
the cache."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import IO

from pyd.errors import ImageError, ImageMismatchError, UsageError
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.manifest import MANIFEST, FileEntry, parse_manifest

Progress = Callable[[str, int, int], None]  # (file name, bytes so far, total)
_CHUNK = 1 << 20
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


def fetch_image(cache: ImageCache, url: str, progress: Progress) -> CachedImage:
    murl = manifest_url(url)
    manifest = parse_manifest(_read_small(murl), origin=murl)
    key = image_key(manifest.arch, manifest.recipe_hash)
    if existing := cache.get(key):
        return existing
    with cache.locked(), cache.staging() as staging:
        for name, entry in sorted(manifest.files.items()):
            _download(urllib.parse.urljoin(murl, name), staging / name, entry, progress)
        return cache.commit(staging, key, replace(manifest, source=murl))


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


def _download(url: str, dest: Path, entry: FileEntry, progress: Progress) -> None:
    h = hashlib.sha256()
    got = 0
    part = dest.with_name(dest.name + ".part")
    try:
        with _open(url) as r, part.open("wb") as out:
            while chunk := r.read(_CHUNK):
                got += len(chunk)
                if got > entry.size:
                    break  # never store more than the manifest promised
                h.update(chunk)
                out.write(chunk)
                progress(dest.name, got, entry.size)
        if got != entry.size:
            raise ImageMismatchError(
                f"{dest.name} from {url} is {'larger' if got > entry.size else f'{got} bytes'}, "
                f"the manifest says {entry.size} bytes; the image was refused",
                hint="the server's copy is incomplete or was changed; try again later",
            )
        if h.hexdigest() != entry.sha256:
            raise ImageMismatchError(
                f"{dest.name} from {url} does not match its manifest (sha256 "
                f"{h.hexdigest()[:16]}…, expected {entry.sha256[:16]}…); the image was refused",
                hint="the server's copy is damaged or was tampered with; nothing was kept",
            )
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
