"""The guest architectures and what vmconfig gives each accelerator for them: the arm64
guest's CPU, interrupt controller and memory limit, and the pairs that cannot run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pyd.config import arches
from pyd.config.arches import get_arch, host_arch_from, normalise, translated_from_sysctl
from pyd.config.machine import machine_settings
from pyd.errors import UsageError
from pyd.image.cache import CachedImage
from pyd.image.manifest import Manifest
from pyd.instance.files import InstanceFiles
from pyd.vm.spec import GuestSpec, guest_spec


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("x86_64", "x86_64"), ("AMD64", "x86_64"), ("arm64", "aarch64"), ("aarch64", "aarch64")],
)
def test_host_spellings_name_the_same_arch(spelling: str, name: str) -> None:
    assert normalise(spelling) == name
    assert get_arch(spelling).name == name


def test_an_unknown_arch_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(UsageError, match="riscv64") as info:
        get_arch("riscv64")
    assert info.value.exit_code == 2
    assert "aarch64" in info.value.hint and "x86_64" in info.value.hint


def test_the_default_is_the_hosts_arch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arches.platform, "machine", lambda: "arm64")
    assert get_arch().name == "aarch64"
    monkeypatch.setattr(arches.platform, "machine", lambda: "AMD64")
    assert get_arch().name == "x86_64"


@pytest.mark.parametrize(
    ("machine", "system", "translated", "host"),
    [
        ("x86_64", "linux", False, "x86_64"),
        ("aarch64", "linux", False, "aarch64"),
        ("arm64", "darwin", False, "aarch64"),  # a native Python on Apple Silicon
        ("x86_64", "darwin", False, "x86_64"),  # an Intel Mac
        ("x86_64", "darwin", True, "aarch64"),  # an x86_64 Python under Rosetta 2
        ("AMD64", "win32", False, "x86_64"),
        ("ARM64", "win32", False, "aarch64"),
        ("x86_64", "linux", True, "x86_64"),  # Rosetta exists only on macOS
        ("AMD64", "win32", True, "x86_64"),
    ],
)
def test_the_hosts_arch_is_the_hardwares_not_the_python_processs(
    machine: str, system: str, translated: bool, host: str
) -> None:
    assert host_arch_from(machine, system, translated) == host


@pytest.mark.parametrize(
    ("returncode", "stdout", "translated"),
    [
        (0, "1\n", True),
        (0, "0\n", False),  # native arm64
        (1, "", False),  # Intel Mac: "unknown oid" on stderr
        (0, "", False),
    ],
)
def test_rosetta_is_read_from_sysctl_proc_translated(
    returncode: int, stdout: str, translated: bool
) -> None:
    assert translated_from_sysctl(returncode, stdout) is translated


@pytest.mark.skipif(sys.platform == "darwin", reason="the probe's own platform")
def test_the_rosetta_probe_runs_nothing_off_macos(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sysctl(*args: object, **kwargs: object) -> None:
        raise AssertionError("sysctl run off macOS")

    monkeypatch.setattr(arches.subprocess, "run", no_sysctl)
    arches.under_rosetta.cache_clear()
    try:
        assert arches.under_rosetta() is False
    finally:
        arches.under_rosetta.cache_clear()


def test_the_arm64_guest_is_virt_with_direct_kernel_boot_on_a_pl011_console() -> None:
    arm = get_arch("aarch64")
    assert (arm.machine, arm.console, arm.qemu) == ("virt", "ttyAMA0", "qemu-system-aarch64")
    assert arm.firmware == ""  # QEMU loads the kernel itself: no firmware
    assert arm.debian == "arm64"


@pytest.mark.parametrize("accel", ["tcg", "kvm", "hvf", "whpx"])
def test_x86_settings_are_those_of_the_accelerator_alone(accel: str) -> None:
    m = machine_settings(accel, "x86_64")
    cpus = {"kvm": "host", "hvf": "host,-pdpe1gb", "tcg": "max"}
    assert m.cpu == cpus.get(accel, "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt")  # whpx: not max
    assert (m.gic, m.max_memory_mib) == ("", None)
    assert ("mitigations=off" in m.cmdline) == (accel == "tcg")


def test_arm64_under_tcg_gets_cheap_pointer_auth_and_a_gicv3() -> None:
    m = machine_settings("tcg", "aarch64")
    assert m.cpu == "max,pauth-impdef=on"
    assert m.gic == "3"  # GICv2 stops at 8 vCPUs; pyd allows 64
    assert "mitigations=off" in m.cmdline and "quiet" in m.cmdline


def test_arm64_on_hardware_runs_the_host_cpu() -> None:
    kvm, hvf = machine_settings("kvm", "aarch64"), machine_settings("hvf", "aarch64")
    assert (kvm.cpu, kvm.gic, kvm.max_memory_mib) == ("host", "host", None)
    # Hypervisor.framework's default 36-bit IPA, less the 1 GiB below virt's RAM.
    assert (hvf.cpu, hvf.gic, hvf.max_memory_mib) == ("host", "3", 63 * 1024)


def test_whpx_is_refused_for_arm64_with_a_way_out() -> None:
    with pytest.raises(UsageError, match=r"whpx.*aarch64") as info:
        machine_settings("whpx", "aarch64")
    assert "accel tcg" in info.value.hint


def test_hvf_refuses_more_memory_than_it_can_map(tmp_path: Path) -> None:
    manifest = Manifest("0", "aarch64", "unit", "0" * 64, {}, {})
    image = CachedImage("aarch64-unit", tmp_path, manifest)
    files = InstanceFiles(tmp_path)

    def spec(memory_mib: int) -> GuestSpec:
        return guest_spec(
            get_arch("aarch64"),
            machine_settings("hvf", "aarch64"),
            image,
            files,
            cpus=4,
            memory_mib=memory_mib,
            ssh_port=2222,
        )

    with pytest.raises(UsageError, match="64512 MiB") as info:
        spec(64 * 1024)
    assert "pyd config set memory 64512MiB" in info.value.hint
    assert spec(63 * 1024).gic == "3"
