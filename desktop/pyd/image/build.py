"""`pyd image build`: runs the guest-image recipe, or reuses the cached result when the
recipe hash is unchanged, and writes manifest.json beside the files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pyd import __version__
from pyd.config.arches import Arch, normalise
from pyd.errors import EnvironmentProblem, ImageError
from pyd.image.binfmt import ensure_foreign_exec
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.digest import sha256_file
from pyd.image.manifest import IMAGE_FILES, OPTIONAL_FILES, FileEntry, Manifest
from pyd.image.recipe import read_recipe, recipe_hash

Progress = Callable[[str], None]
_TAIL = 30


def build_params(arch: Arch, suite: str) -> dict[str, str]:
    return {"arch": arch.name, "debian_arch": arch.debian, "suite": suite}


def build_image(
    cache: ImageCache,
    arch: Arch,
    suite: str,
    recipe: Path,
    progress: Progress,
    *,
    mirror: str | None = None,
) -> tuple[CachedImage, bool]:
    """The image for this recipe, built unless cached. Returns (image, was_built)."""
    digest = recipe_hash(read_recipe(recipe), build_params(arch, suite))
    key = image_key(arch.name, digest)
    # A cached image is never rebuilt in place: instances' OS disks are overlays on it.
    if hit := cache.get(key):
        return hit, False
    _check_tools(arch, progress)
    with cache.locked():
        # Another process may have finished the same build while we waited for the lock.
        if hit := cache.get(key):
            return hit, False
        with cache.staging() as out:
            _run_recipe(recipe, arch, suite, out, progress, mirror)
            progress("==> manifest")
            manifest = _manifest(out, arch, suite, digest)
            return cache.commit(out, key, manifest), True


def _check_tools(arch: Arch, progress: Progress) -> None:
    root = not hasattr(os, "geteuid") or os.geteuid() == 0
    if not root:
        raise EnvironmentProblem(
            "building the guest image needs root (mmdebstrap installs packages into it)",
            hint="run `sudo pyd image build`, or fetch a prebuilt one with `pyd image fetch URL`",
        )
    missing = [t for t in ("mmdebstrap", "mke2fs", "qemu-img", "cpio", "xz") if not shutil.which(t)]
    if missing:
        raise EnvironmentProblem(
            f"building the guest image needs {', '.join(missing)}",
            hint="on Debian/Ubuntu: sudo apt-get install mmdebstrap e2fsprogs qemu-utils cpio "
            "xz-utils; on macOS/Windows use `pyd image fetch URL` instead",
        )
    # Another architecture's packages are configured by running them, under QEMU.
    ensure_foreign_exec(arch, normalise(platform.machine()), root, progress)


def _run_recipe(
    recipe: Path, arch: Arch, suite: str, out: Path, progress: Progress, mirror: str | None
) -> None:
    cmd = [str(recipe / "build"), "--arch", arch.debian, "--suite", suite, "--out", str(out)]
    if mirror:
        cmd += ["--mirror", mirror]
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-_TAIL + 1 :], line]
            if line.startswith("==> "):
                progress(line)
    if proc.returncode != 0:
        raise ImageError(
            f"the guest-image recipe failed (exit {proc.returncode}):\n" + "\n".join(tail),
            hint="mmdebstrap needs root and Debian's archive; see the output above",
        )


def _manifest(out: Path, arch: Arch, suite: str, digest: str) -> Manifest:
    versions = json.loads((out / "versions.json").read_text())
    (out / "versions.json").unlink()
    files = {
        name: FileEntry(size=(out / name).stat().st_size, sha256=sha256_file(out / name))
        for name in (*IMAGE_FILES, *OPTIONAL_FILES)
        if (out / name).exists()
    }
    return Manifest(
        version=f"{suite}-{digest[:12]}",
        arch=arch.name,
        suite=suite,
        recipe_hash=digest,
        versions={k: str(v) for k, v in versions.items()},
        files=files,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        source="built",
        extra={"pyd": __version__},
    )
