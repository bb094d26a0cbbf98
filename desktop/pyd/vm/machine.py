"""Machine settings from vmconfig: per-accelerator CPU model and kernel arguments."""

from __future__ import annotations

from dataclasses import dataclass

from pyd.errors import UsageError
from pyd.resources import vmconfig
from pyd.vm.accel import Accel


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
