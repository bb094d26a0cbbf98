"""index.json, format 1: the images a release tree offers, each with the path and sha256 of
its manifest (whose digests cover every file), so one signature over the index covers
all of it. Pure: parsing, validation, rendering and choosing; the signature is checked by
image/signing.py on the bytes before they are parsed here.

    {"format": 1,
     "images": [{"arch": "x86_64", "recipe_hash": "<64 hex>", "created": "2026-12-03T09:36:00Z",
                 "suite": "trixie", "version": "trixie-27491316cdfe",
                 "versions": {"docker": "26.1.5", ...}, "download_size": 273749489,
                 "manifest": "x86_64-27491316cdfef5fe/manifest.json",
                 "manifest_size": 1073, "manifest_sha256": "<64 hex>"}]}
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.manifest import ARCH, SHA256, Manifest
from pyd.image.signing import Verdict, verify

INDEX = "index.json"
SIGNATURE = "index.json.sig"
FORMAT = 1
MAX_INDEX = 1 << 20
MAX_MANIFEST = 1 << 20
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class IndexEntry:
    arch: str
    recipe_hash: str
    created: str  # ISO 8601 with a zone, as in the manifest
    suite: str
    version: str
    versions: dict[str, str]
    download_size: int  # bytes to transfer for the whole image
    manifest: str  # path relative to index.json, checked by safe_path
    manifest_size: int
    manifest_sha256: str

    @property
    def when(self) -> dt.datetime:
        return _parse_time(self.created)


@dataclass(frozen=True)
class ImageIndex:
    images: tuple[IndexEntry, ...]
    format: int = FORMAT


def safe_path(path: str) -> str:
    """`path` when it stays inside the directory of index.json, else ImageError. Only
    plain names joined by "/": no "..", no absolute path, no backslash, no drive or URL
    scheme (":"), no %-escape, query or fragment that a URL join would read."""
    parts = path.split("/")
    if len(path) > 255 or not all(_COMPONENT.fullmatch(p) for p in parts):
        raise ImageError(
            f"the index names a manifest at {path!r}, outside its directory; it was refused",
            hint="the index is malformed or malicious; tell its publisher",
        )
    return path


def render_index(index: ImageIndex) -> bytes:
    """The bytes to publish (and sign): the same index always renders the same bytes."""
    data = {"format": index.format, "images": [asdict(e) for e in index.images]}
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def parse_index(data: bytes, origin: str = INDEX) -> ImageIndex:
    """An ImageIndex from bytes whose signature was checked; an ImageError says what is
    wrong. Keys this pyd does not know are ignored: a newer publisher may add some."""
    try:
        raw = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise ImageError(f"{origin} is not valid JSON: {e}") from None
    except RecursionError:  # "[" * 200000: json recurses once per level
        raise ImageError(f"{origin} is not valid JSON: it is nested too deeply") from None
    if not isinstance(raw, dict):
        raise ImageError(f"{origin} is not a JSON object")
    fmt = raw.get("format")
    if type(fmt) is not int or fmt != FORMAT:
        raise ImageError(
            f"{origin} has format {fmt!r}, this pyd reads format {FORMAT}",
            hint="a newer pyd may read it: upgrade pyd",
        )
    images = raw.get("images")
    if not isinstance(images, list):
        raise ImageError(f"{origin} has no list of images")
    entries = tuple(_entry(item, f"{origin} image {i + 1}") for i, item in enumerate(images))
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        if (entry.arch, entry.recipe_hash) in seen:
            raise ImageError(f"{origin} lists image {entry.arch}-{entry.recipe_hash[:16]} twice")
        seen.add((entry.arch, entry.recipe_hash))
    return ImageIndex(entries, fmt)


def load_index(
    data: bytes,
    signature: bytes | None,
    keys: Sequence[Ed25519PublicKey],
    *,
    origin: str = INDEX,
    insecure: bool = False,
) -> tuple[ImageIndex, Verdict]:
    """Checks the signature over the bytes as they came, then parses them."""
    verdict = verify(data, signature, keys, origin=origin, insecure=insecure)
    return parse_index(data, origin), verdict


def newest(index: ImageIndex, arch: str) -> IndexEntry | None:
    """The newest image for `arch`; of two made at the same time, the one listed last."""
    candidates = [(e.when, i, e) for i, e in enumerate(index.images) if e.arch == arch]
    return max(candidates, key=lambda c: (c[0], c[1]))[2] if candidates else None


def manifest_url(index_url: str, entry: IndexEntry) -> str:
    """The manifest's URL: next to index.json, never elsewhere (safe_path was checked)."""
    return urllib.parse.urljoin(index_url, safe_path(entry.manifest))


def check_manifest_bytes(entry: IndexEntry, data: bytes, origin: str) -> None:
    """The manifest's bytes are the ones the signed index names (size and sha256): checked
    before the parser sees a byte of them."""
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.manifest_size or digest != entry.manifest_sha256:
        raise ImageMismatchError(
            f"{origin} does not match the index (sha256 {digest[:16]}…, {len(data)} bytes; "
            f"the index says {entry.manifest_sha256[:16]}…, {entry.manifest_size} bytes); "
            "it was refused",
            hint="the server's copy is damaged or was tampered with; nothing was kept",
        )


def check_manifest(entry: IndexEntry, data: bytes, manifest: Manifest, origin: str) -> None:
    """The manifest fetched for `entry` is the one the signed index names."""
    check_manifest_bytes(entry, data, origin)
    if (manifest.arch, manifest.recipe_hash) != (entry.arch, entry.recipe_hash):
        raise ImageMismatchError(
            f"{origin} describes image {manifest.arch}-{manifest.recipe_hash[:16]}, the index "
            f"says {entry.arch}-{entry.recipe_hash[:16]}; it was refused",
            hint="the release tree is inconsistent; tell its publisher",
        )


def entry_for(
    manifest: Manifest, manifest_bytes: bytes, path: str, download_size: int | None = None
) -> IndexEntry:
    """The index entry that publishes `manifest` (its bytes as written) at `path`."""
    return IndexEntry(
        arch=manifest.arch,
        recipe_hash=manifest.recipe_hash,
        created=manifest.created,
        suite=manifest.suite,
        version=manifest.version,
        versions=dict(manifest.versions),
        download_size=manifest.total_size if download_size is None else download_size,
        manifest=safe_path(path),
        manifest_size=len(manifest_bytes),
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _entry(item: object, where: str) -> IndexEntry:
    if not isinstance(item, dict):
        raise ImageError(f"{where} is not a JSON object")
    text = {k: _field(item, k, str, where) for k in ("arch", "recipe_hash", "created")}
    optional = {k: item.get(k, "") for k in ("suite", "version")}
    versions = item.get("versions", {})
    if not isinstance(versions, dict) or not all(
        isinstance(v, str) for v in (*optional.values(), *versions.keys(), *versions.values())
    ):
        raise ImageError(f"{where}: suite, version and versions must be text")
    entry = IndexEntry(
        arch=text["arch"],
        recipe_hash=text["recipe_hash"],
        created=text["created"],
        suite=optional["suite"],
        version=optional["version"],
        versions=dict(versions),
        download_size=_field(item, "download_size", int, where),
        manifest=safe_path(_field(item, "manifest", str, where)),
        manifest_size=_field(item, "manifest_size", int, where),
        manifest_sha256=_field(item, "manifest_sha256", str, where),
    )
    problems = []
    if not ARCH.fullmatch(entry.arch):
        problems.append(f"arch {entry.arch!r} is not an architecture name")
    for key in ("recipe_hash", "manifest_sha256"):
        if not SHA256.fullmatch(getattr(entry, key)):
            problems.append(f"{key} is not a sha256")
    if entry.download_size < 0:
        problems.append("download_size is negative")
    if not 0 < entry.manifest_size <= MAX_MANIFEST:
        problems.append(f"manifest_size {entry.manifest_size} is out of range")
    try:
        _parse_time(entry.created)
    except ValueError:
        problems.append(f"created {entry.created!r} is not an ISO 8601 time with a zone")
    if problems:
        raise ImageError(f"{where}: " + "; ".join(problems))
    return entry


def _field(item: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = item.get(key)
    if type(value) is not kind:  # bool is not an int here
        raise ImageError(f"{where}: {key} is missing or not {kind.__name__}")
    return value


def _parse_time(text: str) -> dt.datetime:
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(text)
    return when
