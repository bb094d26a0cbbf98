"""QEMU's accelerators, and the machine settings vmconfig gives each: CPU model, kernel
arguments and, per guest architecture, the interrupt controller and a memory limit. Which
one this host can use is vm.accel's question (it probes the host)."""

from __future__ import annotations

import enum
import sys
from dataclasses import dataclass
from typing import Any

from pyd.config.arches import get_arch
from pyd.errors import UsageError
from pyd.resources import vmconfig


class Accel(enum.StrEnum):
    """QEMU's accelerators, by the name QEMU, config.toml and state.json give them."""

    KVM = "kvm"
    HVF = "hvf"
    WHPX = "whpx"
    TCG = "tcg"


AUTO = "auto"  # the `accel` setting that means: detect the accelerator at each boot

# The host OSes pyd knows, by Python's sys.platform names; the accelerator each one offers.
SYSTEMS = ("linux", "darwin", "win32")
NATIVE_ACCEL = {"linux": Accel.KVM, "darwin": Accel.HVF, "win32": Accel.WHPX}


def host_system(platform: str = sys.platform) -> str:
    """This host's OS as one of SYSTEMS; another POSIX system counts as "linux"."""
    return platform if platform in SYSTEMS else "linux"


@dataclass(frozen=True)
class MachineSettings:
    accel: Accel
    cpu: str
    cmdline: tuple[str, ...]
    gic: str = ""  # arm virt's -machine gic-version; "" = none (x86) or QEMU's default
    max_memory_mib: int | None = None  # None: no limit of the accelerator's own


def machine_settings(accel: str, arch: str | None = None) -> MachineSettings:
    """The settings of `accel` for a guest of `arch` (default: the host's architecture);
    a UsageError when the accelerator cannot run that architecture at all."""
    try:
        known = Accel(accel)
    except ValueError:
        names = tuple(a.value for a in Accel)
        raise UsageError(f"unknown accelerator {accel!r}", hint=f"use one of {names}") from None
    arch_name = get_arch(arch).name
    table = vmconfig("accel")[known]
    runs = table.get("arches")
    if runs is not None and arch_name not in runs:
        raise UsageError(
            f"the {known} accelerator cannot run an {arch_name} guest (only {', '.join(runs)})",
            hint="use software emulation: pyd config set accel tcg",
        )
    own: dict[str, Any] = table.get(arch_name, {})
    kernel = vmconfig("kernel")
    common = [*kernel["cmdline"], *kernel.get(arch_name, {}).get("cmdline", [])]
    limit = own.get("max_memory_mib")
    return MachineSettings(
        known,
        str(own.get("cpu", table["cpu"])),
        (*common, *table["cmdline"], *own.get("cmdline", [])),
        gic=str(own.get("gic", "")),
        max_memory_mib=None if limit is None else int(limit),
    )
