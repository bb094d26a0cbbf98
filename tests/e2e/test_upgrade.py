"""`pyd upgrade` on a real instance (libvirt): a volume with a known file, a built image and
a container survive the move to a newer image; a newer image whose kernel cannot boot is
rolled back and the instance runs on the previous one. Three boots in all: the first start,
the upgrade, and the restart after the rollback (the broken kernel fails at QEMU's start)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv
from tests.e2e.upgrade_data import data_lost, link_tree, make_data, newer_copy

NAME = "upg"
TAG = "upg/busybox"


class Upg:
    """The instance's pyd, with a cache of its own (PYD_CACHE_DIR) holding the real image."""

    def __init__(self, env: PydEnv, cache: Path) -> None:
        self.env = env
        self.images = cache / "images"
        self.cache = cache

    def pyd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # COLUMNS: rich wraps at 80 columns without a terminal; keep each line whole.
        return self.env.pyd(
            *args, "-n", NAME, check=check, PYD_CACHE_DIR=str(self.cache), COLUMNS="200"
        )

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.pyd("status", "--json").stdout)
        return data


@pytest.fixture(scope="module")
def upg(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upg]:
    """Instance `upg` started on the real image, with a volume holding a known file, a
    busybox image built in it and a container made from it."""
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    cache = tmp_path_factory.mktemp("pyd-cache")
    link_tree(image.path, cache / "images" / image.key)
    inst = Upg(env, cache)
    try:
        inst.pyd("start")
        make_data(env, tmp_path_factory.mktemp("bb"), TAG)
        yield inst
    finally:
        inst.pyd("delete", "-f", check=False)
    assert not (env.home / "instances" / NAME).exists()


def test_upgrade_keeps_volumes_images_and_containers_and_rolls_back_a_broken_image(
    upg: Upg, image: CachedImage
) -> None:
    assert upg.status()["newer_image"] == ""
    newer = newer_copy(image.path, upg.images, 1)
    assert upg.status()["newer_image"] == newer
    assert f"(newer: {newer}" in upg.pyd("status").stdout

    done = upg.pyd("upgrade")
    assert f"{image.key} → {newer}" in done.stderr, done.stderr
    st = upg.status()
    assert (st["state"], st["image"], st["newer_image"]) == ("running", newer, "")
    assert data_lost(upg.env, TAG) == []
    instance = upg.env.home / "instances" / NAME
    assert not (instance / "os.qcow2.pre-upgrade").exists()
    assert not (instance / "upgrade.json").exists()

    # A newer image whose kernel is garbage: QEMU cannot load it.
    broken = newer_copy(image.path, upg.images, 2, broken=("vmlinux", "vmlinuz"))
    failed = upg.pyd("upgrade", check=False)
    print(failed.stderr)  # what the user reads: shown with -s
    assert failed.returncode != 0
    assert f"rolled back to {newer}" in failed.stderr and "running again" in failed.stderr, (
        failed.stderr
    )
    assert "Traceback" not in failed.stderr
    st = upg.status()
    assert (st["state"], st["image"], st["newer_image"]) == ("running", newer, broken)
    assert data_lost(upg.env, TAG) == []
    assert not (instance / "os.qcow2.pre-upgrade").exists()
    assert not (instance / "upgrade.json").exists()
