"""`pyd image boot-check [KEY] [--arch ARCH]`: which cached image it boots, and its refusals
(an unknown arch, a key of another arch: exit 2 with a hint; no image: exit 1, how to build
one). No VM is started here: the throwaway boot is e2e's (tests/e2e/test_boot_check_cli.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyd.cli.image_cmd import boot_check_image
from pyd.errors import ImageError, UsageError
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.manifest import FileEntry, Manifest


def _pyd(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYD_CACHE_DIR": str(cache), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pyd", "image", "boot-check", *args],
        capture_output=True,
        text=True,
        env=env,
    )


def _cached(cache: ImageCache, arch: str) -> CachedImage:
    """A cache entry of `arch` (its files are stand-ins: nothing boots them here)."""
    with cache.staging() as staging:
        for name in ("vmlinuz", "initrd.img", "rootfs.qcow2"):
            (staging / name).write_bytes(name.encode())
        files = {p.name: FileEntry(p.stat().st_size, "0" * 64) for p in staging.iterdir()}
        manifest = Manifest("0", arch, "unit", "0" * 64, {}, files)
        return cache.commit(staging, image_key(arch, "0" * 64), manifest)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImageCache:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    return ImageCache(tmp_path / "images")


def test_the_arch_chooses_the_newest_image_of_that_arch(cache: ImageCache) -> None:
    x86, arm = _cached(cache, "x86_64"), _cached(cache, "aarch64")
    assert boot_check_image(cache, None, None).key == x86.key  # the host's by default
    assert boot_check_image(cache, None, "aarch64").key == arm.key
    assert boot_check_image(cache, None, "arm64").key == arm.key  # the host spelling too
    assert boot_check_image(cache, arm.key, None).key == arm.key  # a key names its own arch
    assert boot_check_image(cache, arm.key, "aarch64").key == arm.key


def test_a_key_of_another_arch_is_refused(cache: ImageCache) -> None:
    x86 = _cached(cache, "x86_64")
    with pytest.raises(UsageError, match="is an x86_64 image, not aarch64") as info:
        boot_check_image(cache, x86.key, "aarch64")
    assert "leave out --arch" in info.value.hint


def test_a_missing_image_says_how_to_build_that_arch(cache: ImageCache) -> None:
    _cached(cache, "x86_64")
    with pytest.raises(ImageError, match="no aarch64 image") as info:
        boot_check_image(cache, None, "aarch64")
    assert "`pyd image build --arch aarch64`" in info.value.hint
    with pytest.raises(ImageError, match="no cached image 'x86_64-nope'") as info:
        boot_check_image(cache, "x86_64-nope", None)
    assert "`pyd image build`" in info.value.hint


def test_the_command_refuses_an_unknown_arch_with_exit_2(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "--arch", "sparc64")
    assert r.returncode == 2, r.stderr
    assert "sparc64" in r.stderr and "hint: pyd knows: aarch64, x86_64" in r.stderr
    assert "Traceback" not in r.stderr
    r = _pyd(tmp_path, "--arch", "aarch64")  # an empty cache
    assert r.returncode == 1 and "no aarch64 image" in r.stderr and "hint:" in r.stderr
