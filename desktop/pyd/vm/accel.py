"""Which accelerator QEMU can use here: kvm, hvf, whpx, or tcg (software emulation)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from pyd.config.machine import AUTO, Accel


def choose_accel(system: str, kvm_opens: bool, cpu_flags: frozenset[str]) -> Accel:
    """Pure decision. kvm needs both an openable /dev/kvm and vmx/svm: a /dev/kvm without
    them exists on some cloud machines, and a guest there hangs instead of failing."""
    if system == "Darwin":
        return Accel.HVF
    if system == "Windows":
        return Accel.WHPX
    if system == "Linux" and kvm_opens and cpu_flags & {"vmx", "svm"}:
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


def detect_accel() -> Accel:
    """The accelerator for this host (probes /dev/kvm and /proc/cpuinfo on Linux)."""
    system = platform.system()
    if system != "Linux":
        return choose_accel(system, False, frozenset())
    return choose_accel(system, _kvm_opens(), _cpu_flags())


def resolve_accel(setting: str) -> Accel:
    """The accelerator an `accel` setting (a name, or AUTO) means on this host."""
    return detect_accel() if setting == AUTO else Accel(setting)
