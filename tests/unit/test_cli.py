"""The CLI's error boundary: messages with hints and exit codes, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path


def _pyd(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYD_CACHE_DIR": str(cache), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=env
    )


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    r = _pyd("image", "frobnicate", cache=tmp_path)
    assert r.returncode == 2
    assert "No such command" in r.stderr and "Traceback" not in r.stderr


def test_bad_arch_and_bad_url_are_usage_errors_with_hints(tmp_path: Path) -> None:
    r = _pyd("image", "build", "--arch", "sparc", cache=tmp_path)
    assert r.returncode == 2 and "hint: pyd knows: aarch64, x86_64" in r.stderr
    r = _pyd("image", "fetch", "ftp://example.invalid/x", cache=tmp_path)
    assert r.returncode == 2 and "http://" in r.stderr


def test_verify_with_empty_cache_fails_with_a_hint(tmp_path: Path) -> None:
    r = _pyd("image", "verify", cache=tmp_path)
    assert r.returncode == 1
    assert "no cached images" in r.stderr and "pyd image build" in r.stderr
    assert "Traceback" not in r.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    r = _pyd("--debug", "image", "verify", cache=tmp_path)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_verify_detects_a_damaged_cached_file(tmp_path: Path) -> None:
    from pyd.config.arches import get_arch
    from pyd.image.build import build_image
    from pyd.image.cache import ImageCache

    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "build").write_text(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in --out) o=$2; shift 2;; *) shift;; esac;"
        " done\nfor f in vmlinuz initrd.img rootfs.qcow2; do echo $f > $o/$f; done\n"
        "echo '{}' > $o/versions.json\n"
    )
    (recipe / "build").chmod(0o755)
    image, _ = build_image(
        ImageCache(tmp_path / "c" / "images"),
        get_arch("x86_64"),
        "trixie",
        recipe,
        lambda line: None,
    )
    assert _pyd("image", "verify", cache=tmp_path / "c").returncode == 0
    image.file("initrd.img").write_text("initrd.imX\n")  # same size, other bytes
    r = _pyd("image", "verify", cache=tmp_path / "c")
    assert r.returncode == 1 and "initrd.img has sha256" in r.stderr
