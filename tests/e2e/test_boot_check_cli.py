"""`pyd image boot-check`, the last step of the README's setup command."""

from __future__ import annotations

import subprocess
import sys

from pyd.image.cache import CachedImage


def test_boot_check_boots_the_image_and_prints_the_engines_version(image: CachedImage) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pyd", "image", "boot-check", image.key],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "Server:" in r.stdout and "Engine:" in r.stdout
    docker = image.manifest.versions["docker"].split("+")[0]
    assert f"Docker {docker}" in r.stderr and "answered after" in r.stderr
