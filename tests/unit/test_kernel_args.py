"""The guest kernel's arguments per architecture (vmconfig/kernel.toml): the PC's i8042
options reach an x86 guest only, on the direct QEMU command line and in the libvirt domain."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.config.machine import machine_settings
from pyd.vm.backends.libvirt_xml import domain_xml
from pyd.vm.backends.qemu_cmdline import qemu_argv
from pyd.vm.spec import Disk, GuestSpec

X86_ONLY = ("i8042.noaux", "i8042.nopnp")
EVERY_ARCH = ("quiet", "loglevel=4", "panic=-1")


def _spec(arch: str, accel: str) -> GuestSpec:
    machine = machine_settings(accel, arch)
    root = Path("/var/pyd/inst")
    return GuestSpec(
        arch=get_arch(arch),
        accel=machine.accel,
        accel_cpu=machine.cpu,
        cpus=2,
        memory_mib=2048,
        kernel=root / "vmlinuz",
        initrd=root / "initrd.img",
        disks=(Disk(root / "os.qcow2", "pyd-os"),),
        ssh_port=40022,
        serial_log=root / "serial.log",
        cmdline_extra=machine.cmdline,
        gic=machine.gic,
    )


def _argv_words(spec: GuestSpec) -> list[str]:
    argv = qemu_argv(spec)
    return argv[argv.index("-append") + 1].split()


def _xml_words(spec: GuestSpec) -> list[str]:
    firmware = Path("/q/qboot.rom") if spec.arch.firmware else None
    root = ET.fromstring(domain_xml("pyd-dev", spec, instance="dev", firmware=firmware))
    el = root.find("os/cmdline")
    assert el is not None and el.text
    return el.text.split()


@pytest.mark.parametrize("render", [_argv_words, _xml_words], ids=["argv", "libvirt"])
@pytest.mark.parametrize("accel", ["tcg", "kvm"])
def test_an_x86_guest_gets_the_i8042_options(
    render: Callable[[GuestSpec], list[str]], accel: str
) -> None:
    words = render(_spec("x86_64", accel))
    assert all(w in words for w in (*EVERY_ARCH, *X86_ONLY))


@pytest.mark.parametrize("render", [_argv_words, _xml_words], ids=["argv", "libvirt"])
@pytest.mark.parametrize("accel", ["tcg", "kvm", "hvf"])
def test_an_arm64_guest_has_no_pc_keyboard_controller_to_configure(
    render: Callable[[GuestSpec], list[str]], accel: str
) -> None:
    words = render(_spec("aarch64", accel))
    assert all(w in words for w in EVERY_ARCH)
    assert not any(w.startswith("i8042.") for w in words)
    assert words[0] == "console=ttyAMA0"


def test_the_accelerators_own_arguments_follow_the_architectures() -> None:
    assert machine_settings("tcg", "aarch64").cmdline == (*EVERY_ARCH, "mitigations=off")
    assert machine_settings("tcg", "x86_64").cmdline == (
        *EVERY_ARCH,
        *X86_ONLY,
        "mitigations=off",
    )
