import dataclasses
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.config.machine import machine_settings
from pyd.errors import PydError, UsageError
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


# -- the matrix of architectures and accelerators ------------------------------------------

MATRIX = [
    ("x86_64", "tcg"),
    ("x86_64", "kvm"),
    ("x86_64", "hvf"),
    ("x86_64", "whpx"),
    ("aarch64", "tcg"),
    ("aarch64", "kvm"),
    ("aarch64", "hvf"),
]


def _arch_spec(tmp: Path, arch: str, accel: str) -> GuestSpec:
    machine = machine_settings(accel, arch)
    return dataclasses.replace(
        _spec(tmp, accel),
        arch=get_arch(arch),
        accel=machine.accel,
        accel_cpu=machine.cpu,
        cmdline_extra=machine.cmdline,
        gic=machine.gic,
        kernel=tmp / ("vmlinux" if arch == "x86_64" else "vmlinuz"),
    )


EXPECTED = {
    # arch, accel: -machine, -accel, -cpu
    ("x86_64", "tcg"): ("q35", "tcg,thread=multi,tb-size=512", "max"),
    ("x86_64", "kvm"): ("q35", "kvm", "host"),
    ("x86_64", "hvf"): ("q35", "hvf", "host,-pdpe1gb"),  # Intel Macs: no 1 GiB pages
    # Not max (hangs under WHPX): qemu64 raised to x86-64-v2; no kernel-irqchip=off on 11.0+.
    ("x86_64", "whpx"): ("q35", "whpx", "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"),
    ("aarch64", "tcg"): (
        "virt,gic-version=3",
        "tcg,thread=multi,tb-size=512",
        "max,pauth-impdef=on",
    ),
    ("aarch64", "kvm"): ("virt,gic-version=host", "kvm", "host"),
    ("aarch64", "hvf"): ("virt,gic-version=3", "hvf", "host"),
}


@pytest.mark.parametrize(("arch", "accel"), MATRIX)
def test_machine_accel_and_cpu_per_arch_and_accelerator(
    tmp_path: Path, arch: str, accel: str
) -> None:
    argv = qemu_argv(_arch_spec(tmp_path, arch, accel))
    assert argv[0] == f"qemu-system-{arch}"
    got = (_opt(argv, "-machine"), _opt(argv, "-accel"), _opt(argv, "-cpu"))
    assert got == tuple([v] for v in EXPECTED[arch, accel])


@pytest.mark.parametrize("accel", ["tcg", "kvm", "hvf"])
def test_arm64_boots_its_kernel_directly_on_pci_virtio_and_a_pl011_console(
    tmp_path: Path, accel: str
) -> None:
    spec = _arch_spec(tmp_path, "aarch64", accel)
    argv = qemu_argv(spec)
    assert "-bios" not in argv  # QEMU loads the kernel itself: no firmware
    assert _opt(argv, "-kernel") == [str(tmp_path / "vmlinuz")]
    assert _opt(argv, "-initrd") == [str(tmp_path / "initrd.img")]
    assert _opt(argv, "-append")[0].startswith("console=ttyAMA0 pyd.root=pyd-root rw ")
    # The same devices as x86: virt has a PCIe host bridge.
    x86 = qemu_argv(_arch_spec(tmp_path, "x86_64", accel))
    assert _opt(argv, "-device") == _opt(x86, "-device")
    assert _opt(argv, "-netdev") == _opt(x86, "-netdev")


@pytest.mark.skipif(
    shutil.which("qemu-system-aarch64") is None or shutil.which("qemu-img") is None,
    reason="needs qemu-system-aarch64 and qemu-img",
)
def test_qemu_itself_accepts_the_arm64_tcg_command_line(tmp_path: Path) -> None:
    """Machine options, CPU properties and devices are QEMU's to judge: it builds the machine
    (stopped, -S) and quits over QMP. A 12-vCPU guest needs the GICv3."""
    spec = dataclasses.replace(_arch_spec(tmp_path, "aarch64", "tcg"), cpus=12, memory_mib=256)
    for disk in spec.disks:
        disk.path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", disk.fmt, str(disk.path), "16M"], check=True
        )
    spec.kernel.write_bytes(b"\0" * 4096)  # loaded, never run
    spec.initrd.write_bytes(b"\0" * 4096)
    r = _qemu_builds(spec)
    assert r.returncode == 0, r.stderr
    # Proves the check can fail: the GICv2 QEMU picks by default stops at 8 vCPUs.
    r = _qemu_builds(dataclasses.replace(spec, gic="2"))
    assert r.returncode != 0 and "exceeds max CPUs" in r.stderr


def _qemu_builds(spec: GuestSpec) -> subprocess.CompletedProcess[str]:
    qmp = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    argv = [*qemu_argv(spec), "-S", "-qmp", "stdio"]
    return subprocess.run(argv, input=qmp, capture_output=True, text=True, timeout=60)


# -- the exact command line per accelerator ---------------------------------------------------


def _exact(tmp: Path, arch: str, accel: str) -> list[str]:
    return qemu_argv(dataclasses.replace(_arch_spec(tmp, arch, accel), cpus=2, memory_mib=2048))


def _tail(tmp: Path, kernel: str, console: str, cmdline: str) -> list[str]:
    """Everything after -display none: the same for every accelerator but the firmware."""
    return [
        "-kernel", str(tmp / kernel),
        "-initrd", str(tmp / "initrd.img"),
        "-append", f"console={console} pyd.root=pyd-root rw {cmdline}",
        "-serial", f"file:{tmp / 'serial.log'}",
        "-device", "virtio-rng-pci",
        "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-drive", f"if=none,id=disk0,file={tmp / 'dir,,with,,commas' / 'os.qcow2'},format=qcow2"
        ",discard=unmap,detect-zeroes=unmap",
        "-device", "virtio-blk-pci,drive=disk0,serial=pyd-os",
        "-drive", f"if=none,id=disk1,file={tmp / 'seed.iso'},format=raw,readonly=on",
        "-device", "virtio-blk-pci,drive=disk1,serial=pyd-seed",
    ]  # fmt: skip


X86_ARGS = "quiet loglevel=4 panic=-1 i8042.noaux i8042.nopnp"
ARM_ARGS = "quiet loglevel=4 panic=-1"
EXACT = {
    # (arch, accel): (-machine, -accel, -cpu, kernel arguments after the common ones)
    ("x86_64", "kvm"): ("q35", "kvm", "host", X86_ARGS),
    ("x86_64", "hvf"): ("q35", "hvf", "host,-pdpe1gb", X86_ARGS),
    ("x86_64", "whpx"): ("q35", "whpx", "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt", X86_ARGS),
    ("x86_64", "tcg"): (
        "q35", "tcg,thread=multi,tb-size=512", "max", X86_ARGS + " mitigations=off"
    ),
    ("aarch64", "kvm"): ("virt,gic-version=host", "kvm", "host", ARM_ARGS),
    # Apple Silicon: GICv3 (more than 8 vCPUs), QEMU's default highmem (no highmem=off).
    ("aarch64", "hvf"): ("virt,gic-version=3", "hvf", "host", ARM_ARGS),
    ("aarch64", "tcg"): (
        "virt,gic-version=3",
        "tcg,thread=multi,tb-size=512",
        "max,pauth-impdef=on",
        ARM_ARGS + " mitigations=off",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("arch", "accel"), sorted(EXACT))
def test_the_exact_argv_per_arch_and_accelerator(tmp_path: Path, arch: str, accel: str) -> None:
    machine, accel_opt, cpu, cmdline = EXACT[arch, accel]
    x86 = arch == "x86_64"
    head = [
        f"qemu-system-{arch}", "-name", "pyd",
        "-machine", machine, "-accel", accel_opt, "-cpu", cpu,
        "-smp", "2", "-m", "2048M",
        "-nodefaults", "-no-user-config", "-display", "none",
        *(["-bios", "qboot.rom"] if x86 else []),
    ]  # fmt: skip
    tail = _tail(tmp_path, "vmlinux" if x86 else "vmlinuz", "ttyS0" if x86 else "ttyAMA0", cmdline)
    assert _exact(tmp_path, arch, accel) == head + tail


def test_whpx_refuses_an_arm64_guest() -> None:
    with pytest.raises(UsageError, match="whpx accelerator cannot run an aarch64 guest") as info:
        machine_settings("whpx", "aarch64")
    assert "accel tcg" in info.value.hint


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs qemu-system-x86_64")
def test_qemu_itself_accepts_the_whpx_cpu_model(tmp_path: Path) -> None:
    """The CPU model and flags WHPX gets are QEMU's to judge: no WHPX here, so tcg builds the
    same CPU (stopped, -S) and quits over QMP. A misspelt flag would stop QEMU at once."""
    cpu = machine_settings("whpx", "x86_64").cpu

    def builds(model: str) -> subprocess.CompletedProcess[str]:
        argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-cpu", model]
        argv += ["-m", "64", "-nodefaults", "-no-user-config", "-display", "none", "-S"]
        qmp = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
        return subprocess.run(
            [*argv, "-qmp", "stdio"], input=qmp, capture_output=True, text=True, timeout=60
        )

    r = builds(cpu)
    assert r.returncode == 0, r.stderr
    r = builds(cpu + ",+sse42")  # the check can fail: QEMU spells it sse4.2
    assert r.returncode != 0 and "sse42" in r.stderr
