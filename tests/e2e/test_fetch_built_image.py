"""The real built image, served over HTTP on 127.0.0.1, fetched with the pyd CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pyd.image.cache import CachedImage
from pyd.image.manifest import MANIFEST
from tests.httpserve import serve_directory


def _pyd(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYD_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _publish(image: CachedImage, dest: Path) -> None:
    dest.mkdir()
    for name in [MANIFEST, *image.manifest.files]:
        os.link(image.file(name), dest / name) if name != "rootfs.qcow2" else shutil.copy(
            image.file(name), dest / name
        )


def test_fetch_accepts_the_built_image_and_refuses_one_flipped_byte(
    image: CachedImage, tmp_path: Path
) -> None:
    srv = tmp_path / "srv"
    _publish(image, srv)
    good_cache = tmp_path / "good"
    with serve_directory(srv) as url:
        r = _pyd("image", "fetch", url, cache=good_cache)
        assert r.returncode == 0, r.stderr
        assert _pyd("image", "verify", cache=good_cache).returncode == 0
        fetched = Path(r.stdout.strip())
        assert fetched.parent == good_cache / "images"
        assert (fetched / "rootfs.qcow2").read_bytes() == image.file("rootfs.qcow2").read_bytes()

        with (srv / "rootfs.qcow2").open("r+b") as f:
            f.seek(100 * 1024 * 1024)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x20]))
        bad_cache = tmp_path / "bad"
        r = _pyd("image", "fetch", url, cache=bad_cache)
    assert r.returncode == 1
    assert "rootfs.qcow2" in r.stderr and "does not match its manifest" in r.stderr
    assert "Traceback" not in r.stderr
    leftovers = [p for p in (bad_cache / "images").rglob("*") if p.is_file() and p.name != ".lock"]
    assert leftovers == []
    assert _pyd("image", "ls", "--json", cache=bad_cache).stdout.strip() == "[]"
