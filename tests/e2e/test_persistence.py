"""Docker's state lives on the data disk: it survives a reboot and a new OS disk."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pyd.image.cache import CachedImage
from pyd.instance.disks import create_overlay
from pyd.vm.throwaway import booted, check, prepare, run, wait_for_docker
from tests.e2e.guestvm import build_busybox_image


def test_named_volume_survives_reboot_and_os_disk_replacement(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory, busybox_static: Path
) -> None:
    files = prepare(tmp_path_factory.mktemp("persist") / "vm", image)
    with booted(files, image) as (_vm, ssh):
        wait_for_docker(ssh)
        build_busybox_image(ssh, busybox_static, "keep/busybox")
        check(ssh, "docker volume create keep")
        check(
            ssh,
            "docker run --rm -v keep:/data keep/busybox sh -c "
            "'echo survives-$((6*7)) > /data/proof'",
        )

    with booted(files, image) as (_vm, ssh):  # plain reboot
        wait_for_docker(ssh)
        out = check(ssh, "docker run --rm -v keep:/data keep/busybox cat /data/proof")
        assert out.strip() == "survives-42"
        check(ssh, "touch /etc/written-on-the-old-os-disk && sync")

    # What an image upgrade would do: a new, empty OS disk (its inode may be the old one's;
    # the marker's absence below proves the disk is new).
    files.os_disk.unlink()
    create_overlay(image.file("rootfs.qcow2"), files.os_disk)
    with booted(files, image) as (_vm, ssh):
        wait_for_docker(ssh)
        assert run(ssh, "test -e /etc/written-on-the-old-os-disk").exit_code == 1, "OS disk kept"
        out = check(ssh, "docker run --rm -v keep:/data keep/busybox cat /data/proof")
        assert out.strip() == "survives-42"
        assert "keep/busybox" in check(ssh, "docker images --format '{{.Repository}}'")


def test_a_data_disk_holding_something_else_is_never_formatted(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    files = prepare(tmp_path_factory.mktemp("foreign") / "vm", image)
    # Put a foreign signature (an ext4 filesystem with another label) on the data disk.
    raw = files.data_disk.with_suffix(".raw")
    subprocess.run(["truncate", "-s", "64M", str(raw)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-L", "my-precious", str(raw)], check=True)
    files.data_disk.unlink()
    subprocess.run(
        ["qemu-img", "convert", "-O", "qcow2", str(raw), str(files.data_disk)], check=True
    )
    with booted(files, image) as (_vm, ssh):
        reason = check(
            ssh,
            "i=0; until [ -e /run/pyd/datadisk.error ]; do i=$((i+1)); "
            "[ $i -gt 600 ] && exit 9; sleep 0.1; done; "
            "cat /run/pyd/datadisk.error",
        )
        assert "refusing" in reason
        assert run(ssh, "pidof dockerd").exit_code != 0
    # The guest saw the qcow2 copy; prove that copy is unchanged too.
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(files.data_disk), str(raw)], check=True)
    label = subprocess.run(
        ["blkid", "-o", "value", "-s", "LABEL", str(raw)], capture_output=True, text=True
    )
    assert label.stdout.strip() == "my-precious"


def _allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def test_space_freed_in_the_guest_goes_back_to_the_host(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    files = prepare(tmp_path_factory.mktemp("trim") / "vm", image)
    with booted(files, image) as (_vm, ssh):
        wait_for_docker(ssh)
        before = _allocated(files.data_disk)
        check(ssh, "yes pyd-fills-the-disk | head -c 200M > /var/lib/docker/filler && sync")
        filled = _allocated(files.data_disk)
        assert filled - before > 150 * 2**20
        check(ssh, "rm /var/lib/docker/filler && sync")
        # ext4 sends the discards when its journal commits (every 5 s).
        deadline = time.monotonic() + 60
        while _allocated(files.data_disk) > filled - 150 * 2**20:
            assert time.monotonic() < deadline, "freed blocks were not returned to the host"
            time.sleep(1)
