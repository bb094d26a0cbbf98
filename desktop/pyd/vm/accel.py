"""Which accelerator QEMU can use here: kvm, hvf, whpx, or tcg (software emulation)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from pyd.config.arches import host_arch
from pyd.config.machine import AUTO, Accel
from pyd.errors import UsageError

# The hardware accelerators run guests of the host's own architecture only.
HARDWARE = frozenset({Accel.KVM, Accel.HVF, Accel.WHPX})


def choose_accel(
    system: str,
    kvm_opens: bool,
    cpu_flags: frozenset[str],
    host: str = "x86_64",
    guest: str = "x86_64",
) -> Accel:
    """Pure decision. kvm needs both an openable /dev/kvm and, on x86, vmx/svm: a /dev/kvm
    without them exists on some cloud machines, and a guest there hangs instead of failing.
    (arm64 CPUs list no such flag: an openable /dev/kvm is the whole test there.)"""
    if guest != host:
        return Accel.TCG
    if system == "Darwin":
        return Accel.HVF
    if system == "Windows":
        return Accel.WHPX
    if system == "Linux" and kvm_opens and (host != "x86_64" or cpu_flags & {"vmx", "svm"}):
        return Accel.KVM
    return Accel.TCG


def _kvm_opens() -> bool:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    os.close(fd)
    return True


def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return frozenset(flags)


def detect_accel(guest: str | None = None) -> Accel:
    """The accelerator for a guest of `guest` (default: the host's architecture) on this
    host (probes /dev/kvm and /proc/cpuinfo on Linux)."""
    system, host = platform.system(), host_arch()
    guest = guest or host
    if system != "Linux" or guest != host:
        return choose_accel(system, False, frozenset(), host, guest)
    return choose_accel(system, _kvm_opens(), _cpu_flags(), host, guest)


def check_accel(accel: Accel, host: str, guest: str) -> None:
    """A UsageError when a hardware accelerator is asked for a guest of another architecture."""
    if accel in HARDWARE and guest != host:
        raise UsageError(
            f"{accel} cannot run an {guest} guest on this {host} machine: hardware "
            "accelerators run guests of the host's own architecture only",
            hint="use software emulation (pyd config set accel tcg), or auto, which picks it",
        )


def resolve_accel(setting: str, guest: str | None = None) -> Accel:
    """The accelerator an `accel` setting (a name, or AUTO) means on this host for a guest
    of `guest` (default: the host's architecture)."""
    if setting == AUTO:
        return detect_accel(guest)
    accel = Accel(setting)
    check_accel(accel, host_arch(), guest or host_arch())
    return accel
