"""The image cache: one directory per image, named ARCH-HASH, holding its files and
manifest.json. Entries appear atomically (built or fetched into a staging directory,
then renamed), so a half-written image is never found."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pyd.errors import ImageError
from pyd.image.manifest import MANIFEST, SAFE_NAME, Manifest, parse_manifest

_STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class CachedImage:
    key: str
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        return self.path / name


def image_key(arch: str, recipe_hash: str) -> str:
    return _plain(f"{arch}-{recipe_hash[:16]}")


def _plain(key: str) -> str:
    """`key` when it is one plain name, a directory directly in the cache: the manifest
    checks arch and recipe_hash already, this keeps any other caller from leaving it."""
    if not SAFE_NAME.fullmatch(key):
        raise ImageError(
            f"{key!r} is not an image name; it was refused",
            hint="image names are ARCH-HASH, as `pyd image ls` lists them",
        )
    return key


class ImageCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, key: str) -> CachedImage | None:
        path = self.root / key
        try:
            text = (path / MANIFEST).read_text()
        except FileNotFoundError:
            return None
        manifest = parse_manifest(text, origin=str(path / MANIFEST))
        missing = [n for n, e in manifest.files.items() if not _size_matches(path / n, e.size)]
        if missing:
            raise ImageError(
                f"cached image {key} is incomplete or damaged ({', '.join(missing)})",
                hint=f"remove {path} and build or fetch it again",
            )
        return CachedImage(key, path, manifest)

    def entries(self) -> list[CachedImage]:
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not (path / MANIFEST).exists():
                continue
            try:
                image = self.get(path.name)
            except ImageError:
                continue
            if image:
                found.append(image)
        return found

    def find(self, arch: str) -> CachedImage | None:
        """The newest complete image for `arch`."""
        candidates = [e for e in self.entries() if e.manifest.arch == arch]
        return max(candidates, key=lambda e: e.manifest.created, default=None)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises builds and fetches into this cache across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root / ".lock"):
            yield

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A scratch directory in the cache (same filesystem, so commit is a rename);
        removed unless committed."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.root))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, staging: Path, key: str, manifest: Manifest) -> CachedImage:
        """Moves a finished image into place. An existing entry is never replaced: instances'
        OS disks are overlays on its rootfs.qcow2, and new bytes under them corrupt them."""
        final = self.root / _plain(key)
        if final.exists():
            raise ImageError(
                f"image {key} is already in the cache; it was left as it is",
                hint="nothing to do: the cached copy is used (`pyd image verify` checks it); "
                "it is never replaced, instances' disks are overlays on it",
            )
        (staging / MANIFEST).write_text(manifest.to_json())
        os.replace(staging, final)
        return CachedImage(key, final, manifest)


def _size_matches(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False
