"""QEMU's accelerators, and the machine settings vmconfig gives each: CPU model and kernel
arguments. Which one this host can use is vm.accel's question (it probes the host)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pyd.errors import UsageError
from pyd.resources import vmconfig


class Accel(enum.StrEnum):
    """QEMU's accelerators, by the name QEMU, config.toml and state.json give them."""

    KVM = "kvm"
    HVF = "hvf"
    WHPX = "whpx"
    TCG = "tcg"


AUTO = "auto"  # the `accel` setting that means: detect the accelerator at each boot


@dataclass(frozen=True)
class MachineSettings:
    accel: Accel
    cpu: str
    cmdline: tuple[str, ...]


def machine_settings(accel: str) -> MachineSettings:
    try:
        known = Accel(accel)
    except ValueError:
        names = tuple(a.value for a in Accel)
        raise UsageError(f"unknown accelerator {accel!r}", hint=f"use one of {names}") from None
    table = vmconfig("accel")[known]
    common = vmconfig("kernel")["cmdline"]
    return MachineSettings(known, str(table["cpu"]), (*common, *table["cmdline"]))
