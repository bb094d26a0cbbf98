"""The index client: the newest image for an architecture from a signed release index
(`pyd image pull`, and `pyd start` where the host does not build its image).

The chain of trust: index.json's bytes are checked against index.json.sig before they are
parsed; the index names each manifest's size and sha256; the manifest names each file's;
image/fetch.py checks every file before the image is committed to the cache. Anything
that does not match is refused and nothing of it stays in the cache.

Each verified index is also kept in the cache (`.index.json`, its signature and where and
when it came from), so that `pyd status` can say a newer image exists without the network
(`cached_newest`, which checks the stored signature again). An index accepted with
--insecure is never kept: nothing later may mistake it for a checked one.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pyd.errors import ImageError
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.fetch import Progress as FileProgress
from pyd.image.fetch import fetch_files
from pyd.image.index import (
    INDEX,
    MAX_INDEX,
    MAX_MANIFEST,
    SIGNATURE,
    IndexEntry,
    check_manifest,
    check_manifest_bytes,
    load_index,
    manifest_url,
    newest,
)
from pyd.image.manifest import parse_manifest
from pyd.image.signing import SIGNATURE_SIZE
from pyd.image.transfer import DEFAULT_POLICY, RetryPolicy, describe, eta, rate_of
from pyd.image.transfer import Progress as Rate
from pyd.image.trust import trusted_keys

STORED_INDEX = ".index.json"
STORED_SIGNATURE = ".index.json.sig"
STORED_META = ".index-meta.json"
_TIMEOUT = 30

Keys = Sequence[tuple[str, Ed25519PublicKey]]  # (file name, key), as trust.trusted_keys gives


def _silent(name: str, done: int, total: int) -> None:
    """No per-file progress: the caller shows none."""


@dataclass(frozen=True)
class PullProgress:
    """What a pull reports: lines (which index, which image, the --insecure warning) and
    each file's bytes."""

    info: Callable[[str], None]
    transfer: FileProgress = _silent


class IndexUnreachable(ImageError):
    """No URL of the index answered: the network or the servers, not the content."""


@dataclass(frozen=True)
class _Fetched:
    url: str  # the index URL that answered
    data: bytes
    signature: bytes | None  # None: the server has no index.json.sig


def pull_newest(
    cache: ImageCache,
    arch: str,
    index_urls: Sequence[str],
    keys: Keys,
    progress: PullProgress,
    *,
    insecure: bool = False,
    remember: bool = True,
    policy: RetryPolicy = DEFAULT_POLICY,
    sleep: Callable[[float], None] = time.sleep,
) -> CachedImage:
    """The newest `arch` image of the index at `index_urls` (the first that answers; the
    others are its mirrors), from the cache when it is there already. `remember`: keep the
    verified index for cached_newest (not for a one-off source such as an archive's
    file:///…/index.json)."""
    if not index_urls:
        raise ImageError(
            "no image index is configured",
            hint="set image_index (`pyd config set image_index URL`) or PYD_IMAGE_INDEX",
        )
    fetched, urls = _fetch_index([index_url(u) for u in index_urls])
    index, verdict = load_index(
        fetched.data,
        fetched.signature,
        [k for _, k in keys],
        origin=fetched.url,
        insecure=insecure,
    )
    entry = newest(index, arch)
    if verdict.warning:
        progress.info(f"WARNING: {verdict.warning}")
    else:
        progress.info(f"index {fetched.url}: signed by {verdict.key}")
        _refuse_older(cache, urls, fetched.url, arch, entry, keys)
        if remember:
            _store_index(cache, fetched)
    if entry is None:
        arches = sorted({e.arch for e in index.images})
        has = f"only {', '.join(arches)}" if arches else "no images at all"
        raise ImageError(
            f"the index {fetched.url} has no {arch} image ({has})",
            hint="check the URL, or ask its publisher for a release of this architecture",
        )
    key = image_key(entry.arch, entry.recipe_hash)
    if (cached := cache.get(key)) is not None:
        progress.info(f"{key} is already the newest {arch} image and in the cache")
        return cached
    murls = [manifest_url(u, entry) for u in urls]
    murl, data = _read_first(murls, MAX_MANIFEST, "manifest")
    check_manifest_bytes(entry, data, murl)  # before the parser sees a byte of it
    manifest = parse_manifest(data.decode("utf-8", errors="replace"), origin=murl)
    check_manifest(entry, data, manifest, murl)
    progress.info(
        f"downloading {key} ({entry.created}, {entry.download_size / 1e6:.0f} MB) from {murl}"
    )
    bases = [murl, *(m for m in murls if m != murl)]
    return fetch_files(cache, manifest, bases, progress.transfer, policy=policy, sleep=sleep)


def _refuse_older(
    cache: ImageCache,
    urls: Sequence[str],
    url: str,
    arch: str,
    entry: IndexEntry | None,
    keys: Keys,
) -> None:
    """A signature does not say when: a mirror can serve an older index, still validly
    signed (stale, or replayed to hold users on an image with known holes). Refused when
    the index last verified from these same URLs listed a newer `arch` image; an index of
    another source is not compared (its dates say nothing about this one's)."""
    stored_from = stored_index_meta(cache).get("url")
    if stored_from not in urls:
        return
    seen = cached_newest(cache, arch, keys)
    if seen is None or (entry is not None and entry.when >= seen.when):
        return
    offered = (
        f"its newest {arch} image is from {entry.created}" if entry else f"it has no {arch} image"
    )
    raise ImageError(
        f"the index at {url} is older than the one verified from {stored_from} before: "
        f"{offered}, the one seen then is from {seen.created} "
        f"({image_key(seen.arch, seen.recipe_hash)}); a mirror serves a stale or replayed "
        "index, so it was refused",
        hint="try again later, or name an up-to-date mirror with `pyd image pull --index URL`",
    )


def index_url(url: str) -> str:
    """The index's URL, given it or the directory that holds it (as fetch.manifest_url):
    `http://h/releases` is `http://h/releases/index.json`, not a page to check as one."""
    if urllib.parse.urlsplit(url).path.endswith(".json"):
        return url
    return urllib.parse.urljoin(url if url.endswith("/") else url + "/", INDEX)


def cached_newest(cache: ImageCache, arch: str, keys: Keys | None = None) -> IndexEntry | None:
    """The newest `arch` image of the index last pulled, without the network; None when
    there is none, or the stored index no longer verifies with `keys` (default: the shipped
    ones and PYD_IMAGE_KEY's)."""
    try:
        data = (cache.root / STORED_INDEX).read_bytes()
        signature = (cache.root / STORED_SIGNATURE).read_bytes()
        trusted = trusted_keys([], os.environ) if keys is None else keys
        index, _ = load_index(
            data, signature, [k for _, k in trusted], origin=str(cache.root / STORED_INDEX)
        )
    except (OSError, ImageError):
        return None
    return newest(index, arch)


def stored_index_meta(cache: ImageCache) -> Mapping[str, str]:
    """{"url": …, "fetched": ISO time} of the stored index; empty when there is none."""
    try:
        meta = json.loads((cache.root / STORED_META).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {}


def line_progress(info: Callable[[str], None], every: float = 2.0) -> FileProgress:
    """Per-file progress as text lines for a line-based display (`pyd start`): bytes, rate
    and time left, at most every `every` seconds per file and once at its end."""
    meters: dict[str, _LineMeter] = {}

    def report(name: str, done: int, total: int) -> None:
        meter = meters.setdefault(name, _LineMeter(every))
        line = meter.line(done, total, time.monotonic())
        if line:
            info(f"{name}: {line}")

    return report


@dataclass
class _LineMeter:
    every: float
    samples: list[tuple[float, int]] = field(default_factory=list)
    last: float = 0.0
    finished: bool = False

    def line(self, done: int, total: int, now: float) -> str:
        if not self.samples:
            self.last = now  # the first line once there is a rate to show
        recent = [s for s in self.samples if now - s[0] <= 5.0][-50:]
        self.samples = [*recent, (now, done)]
        if self.finished or (done < total and now - self.last < self.every):
            return ""
        self.last, self.finished = now, done >= total
        rate = max(0.0, rate_of(self.samples))
        return describe(Rate(done, total, rate, eta(done, total, rate)))


def _fetch_index(index_urls: Sequence[str]) -> tuple[_Fetched, list[str]]:
    """index.json and its signature from the first URL that serves both (a missing
    signature is served as "none"); with the URLs in the order to try the rest in."""
    errors: list[str] = []
    for url in index_urls:
        try:
            data = _read(url, MAX_INDEX, INDEX)
            signature = _read_optional(urllib.parse.urljoin(url, SIGNATURE))
        except ImageError as e:
            errors.append(e.message)
            continue
        return _Fetched(url, data, signature), [url, *(u for u in index_urls if u != url)]
    raise IndexUnreachable(
        "no image index answered: " + "; ".join(errors),
        hint="check image_index / PYD_IMAGE_INDEX and the network",
    )


def _read_first(urls: Sequence[str], cap: int, what: str) -> tuple[str, bytes]:
    errors: list[str] = []
    for url in urls:
        try:
            return url, _read(url, cap, what)
        except ImageError as e:
            errors.append(e.message)
    raise ImageError(f"no mirror served the {what}: " + "; ".join(errors), hint="check the network")


def _read(url: str, cap: int, what: str) -> bytes:
    data = _get(url, cap, what, optional=False)
    assert data is not None
    return data


def _read_optional(url: str) -> bytes | None:
    """The signature, or None when the server says it has none (then the index is
    "unsigned": refused unless --insecure)."""
    return _get(url, SIGNATURE_SIZE * 16, SIGNATURE, optional=True)


def _get(url: str, cap: int, what: str, *, optional: bool) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
            data: bytes = response.read(cap + 1)
    except urllib.error.HTTPError as e:
        if optional and e.code in (404, 410):
            return None
        raise ImageError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        if optional and isinstance(reason, FileNotFoundError):
            return None
        raise ImageError(f"cannot read {url}: {reason}") from None
    if len(data) > cap:
        raise ImageError(f"{url} is larger than any {what} ({cap} bytes); it was refused")
    return data


def _store_index(cache: ImageCache, fetched: _Fetched) -> None:
    """Keeps a verified index for cached_newest: signature, index, then where it came from."""
    assert fetched.signature is not None  # verified, so signed
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = json.dumps({"url": fetched.url, "fetched": now}, indent=2) + "\n"
    cache.root.mkdir(parents=True, exist_ok=True)
    for name, data in (
        (STORED_SIGNATURE, fetched.signature),
        (STORED_INDEX, fetched.data),
        (STORED_META, meta.encode()),
    ):
        fd, tmp = tempfile.mkstemp(dir=cache.root, prefix=f"{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, cache.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
