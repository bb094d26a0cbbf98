import time
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.errors import PydError
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.qemu_cmdline import kernel_cmdline, qemu_argv
from pyd.vm.spec import Disk, GuestSpec
from pyd.vm.throwaway_qemu import DirectVM


def _spec(tmp: Path, accel: str = "tcg") -> GuestSpec:
    return GuestSpec(
        arch=get_arch("x86_64"),
        accel=accel,
        accel_cpu="max",
        cpus=2,
        memory_mib=2048,
        kernel=tmp / "vmlinux",
        initrd=tmp / "initrd.img",
        disks=(
            Disk(tmp / "dir,with,commas" / "os.qcow2", "pyd-os"),
            Disk(tmp / "seed.iso", "pyd-seed", fmt="raw", readonly=True),
        ),
        ssh_port=40022,
        serial_log=tmp / "serial.log",
        cmdline_extra=("quiet", "mitigations=off"),
    )


def _opt(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_only_ssh_is_forwarded_and_only_on_loopback(tmp_path: Path) -> None:
    netdevs = _opt(qemu_argv(_spec(tmp_path)), "-netdev")
    assert netdevs == ["user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"]


def test_disks_are_virtio_with_serials_and_the_seed_is_read_only(tmp_path: Path) -> None:
    argv = qemu_argv(_spec(tmp_path))
    drives = _opt(argv, "-drive")
    assert "dir,,with,,commas" in drives[0], "commas in paths must be doubled for QEMU"
    assert "discard=unmap" in drives[0]
    assert drives[1].endswith("format=raw,readonly=on")
    devices = _opt(argv, "-device")
    assert "virtio-blk-pci,drive=disk0,serial=pyd-os" in devices
    assert "virtio-blk-pci,drive=disk1,serial=pyd-seed" in devices


def test_tcg_gets_multithreaded_emulation_and_qboot(tmp_path: Path) -> None:
    argv = qemu_argv(_spec(tmp_path))
    assert _opt(argv, "-accel") == ["tcg,thread=multi,tb-size=512"]
    assert _opt(argv, "-bios") == ["qboot.rom"]
    assert _opt(qemu_argv(_spec(tmp_path, "kvm")), "-accel") == ["kvm"]


def test_kernel_cmdline_names_console_and_root_label(tmp_path: Path) -> None:
    line = kernel_cmdline(_spec(tmp_path))
    assert line.startswith("console=ttyS0 pyd.root=pyd-root rw ")
    assert line.endswith("quiet mitigations=off")


def test_a_qemu_that_exits_is_reported_at_once_not_after_the_boot_timeout(
    tmp_path: Path,
) -> None:
    files = InstanceFiles(tmp_path)
    spec = _spec(tmp_path)  # its disks do not exist: QEMU refuses to start
    vm = DirectVM.launch(spec, files)
    started = time.monotonic()
    with pytest.raises(PydError, match="QEMU exited"):
        vm.connect(timeout=120)
    assert time.monotonic() - started < 30
