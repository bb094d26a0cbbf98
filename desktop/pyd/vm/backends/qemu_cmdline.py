"""The QEMU command line for a pyd guest, as data (pure): a test can assert on it and a
backend runs it. Direct kernel boot, virtio disks identified by serial, user-mode NAT with
SSH forwarded from one loopback port, serial console to a file."""

from __future__ import annotations

from pyd.config.machine import Accel
from pyd.vm.spec import GuestSpec

ROOT_LABEL = "pyd-root"
TB_CACHE_MIB = 512  # TCG's translation cache, the same under either backend
# QEMU's -accel option per accelerator: TCG translates on every vCPU's thread.
ACCEL_OPTIONS: dict[Accel, str] = {a: a.value for a in Accel} | {
    Accel.TCG: f"tcg,thread=multi,tb-size={TB_CACHE_MIB}"
}


def kernel_cmdline(spec: GuestSpec) -> str:
    base = [f"console={spec.arch.console}", f"pyd.root={ROOT_LABEL}", "rw"]
    return " ".join([*base, *spec.cmdline_extra])


def machine_option(spec: GuestSpec) -> str:
    """-machine's value: the arch's machine, with arm virt's interrupt controller."""
    return spec.arch.machine + (f",gic-version={spec.gic}" if spec.gic else "")


def qemu_argv(spec: GuestSpec) -> list[str]:
    argv = [
        spec.arch.qemu,
        "-name",
        "pyd",
        "-machine",
        machine_option(spec),
        "-accel",
        ACCEL_OPTIONS[spec.accel],
        "-cpu",
        spec.accel_cpu,
        "-smp",
        str(spec.cpus),
        "-m",
        f"{spec.memory_mib}M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        *(["-bios", spec.arch.firmware] if spec.arch.firmware else []),
        "-kernel",
        str(spec.kernel),
        "-initrd",
        str(spec.initrd),
        "-append",
        kernel_cmdline(spec),
        "-serial",
        f"file:{spec.serial_log}",
        "-device",
        "virtio-rng-pci",
        # Only SSH is reachable from the host, and only on loopback.
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
    ]
    for i, disk in enumerate(spec.disks):
        drive = f"if=none,id=disk{i},file={_escape(str(disk.path))},format={disk.fmt}"
        drive += ",readonly=on" if disk.readonly else ",discard=unmap,detect-zeroes=unmap"
        argv += ["-drive", drive, "-device", f"virtio-blk-pci,drive=disk{i},serial={disk.serial}"]
    if spec.pidfile:
        argv += ["-pidfile", str(spec.pidfile)]
    return argv


def _escape(value: str) -> str:
    """QEMU option values use ',' as separator; a literal comma is written twice."""
    return value.replace(",", ",,")
