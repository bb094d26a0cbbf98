"""`pyd upgrade` on a real instance (libvirt): a volume with a known file, a built image and
a container survive the move to a newer image; a newer image whose kernel cannot boot is
rolled back and the instance runs on the previous one. Three boots in all: the first start,
the upgrade, and the restart after the rollback (the broken kernel fails at QEMU's start)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyd.image.cache import CachedImage, image_key
from pyd.image.manifest import MANIFEST
from tests.e2e.pydcli import PydEnv, build_busybox_image

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

    def in_volume(self) -> str:
        out = self.env.docker("run", "--rm", "-v", "keep:/data", TAG, "cat", "/data/proof")
        return out.stdout.strip()


def _copy_image(src: Path, images: Path, digit: str, broken: tuple[str, ...] = ()) -> str:
    """A "newer" image: `src`'s files hard-linked under another key (recipe hash and date
    changed in its manifest); the files named in `broken` replaced by garbage, their digests
    recomputed so the image is a consistent, if unbootable, one."""
    manifest = json.loads((src / MANIFEST).read_text())
    manifest["recipe_hash"] = digit * 64
    manifest["created"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    key = image_key(manifest["arch"], manifest["recipe_hash"])
    dest = images / key
    dest.mkdir(mode=0o700)
    for name in manifest["files"]:
        if name in broken:
            garbage = os.urandom(4096)
            (dest / name).write_bytes(garbage)
            manifest["files"][name] = {
                "size": len(garbage),
                "sha256": hashlib.sha256(garbage).hexdigest(),
            }
        else:
            os.link(src / name, dest / name)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return key


def _link_tree(src: Path, dest: Path) -> None:
    """Hard links where the filesystem allows (no 330 MB copy), else copies."""
    dest.mkdir(mode=0o700, parents=True)
    for path in src.iterdir():
        try:
            os.link(path, dest / path.name)
        except OSError:
            shutil.copy2(path, dest / path.name)


@pytest.fixture(scope="module")
def upg(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upg]:
    """Instance `upg` started on the real image, with a volume holding a known file, a
    busybox image built in it and a container made from it."""
    env = PydEnv(tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("docker-config"))
    cache = tmp_path_factory.mktemp("pyd-cache")
    _link_tree(image.path, cache / "images" / image.key)
    inst = Upg(env, cache)
    try:
        inst.pyd("start")
        build_busybox_image(env, tmp_path_factory.mktemp("bb"), TAG)
        env.docker("volume", "create", "keep")
        env.docker(
            "run",
            "--rm",
            "-v",
            "keep:/data",
            TAG,
            "sh",
            "-c",
            "echo survives-$((6*7)) > /data/proof",
        )
        env.docker("create", "--name", "kept", TAG, "true")
        yield inst
    finally:
        inst.pyd("delete", "-f", check=False)
    assert not (env.home / "instances" / NAME).exists()


def test_upgrade_keeps_volumes_images_and_containers_and_rolls_back_a_broken_image(
    upg: Upg, image: CachedImage
) -> None:
    assert upg.status()["newer_image"] == ""
    newer = _copy_image(image.path, upg.images, "a")
    assert upg.status()["newer_image"] == newer
    assert f"(newer: {newer}" in upg.pyd("status").stdout

    done = upg.pyd("upgrade")
    assert f"{image.key} → {newer}" in done.stderr, done.stderr
    st = upg.status()
    assert (st["state"], st["image"], st["newer_image"]) == ("running", newer, "")
    assert upg.in_volume() == "survives-42"
    names = upg.env.docker("ps", "-a", "--format", "{{.Names}} {{.Image}}").stdout.split("\n")
    assert f"kept {TAG}" in names
    instance = upg.env.home / "instances" / NAME
    assert not (instance / "os.qcow2.pre-upgrade").exists()
    assert not (instance / "upgrade.json").exists()

    # A newer image whose kernel is garbage: QEMU cannot load it.
    broken = _copy_image(image.path, upg.images, "b", broken=("vmlinux", "vmlinuz"))
    failed = upg.pyd("upgrade", check=False)
    print(failed.stderr)  # what the user reads: shown with -s
    assert failed.returncode != 0
    assert f"rolled back to {newer}" in failed.stderr and "running again" in failed.stderr, (
        failed.stderr
    )
    assert "Traceback" not in failed.stderr
    st = upg.status()
    assert (st["state"], st["image"], st["newer_image"]) == ("running", newer, broken)
    assert upg.in_volume() == "survives-42"
    assert not (instance / "os.qcow2.pre-upgrade").exists()
    assert not (instance / "upgrade.json").exists()
