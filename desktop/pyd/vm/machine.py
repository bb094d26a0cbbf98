"""Machine settings from vmconfig: per-accelerator CPU model and kernel arguments."""

from __future__ import annotations

from dataclasses import dataclass

from pyd.errors import UsageError
from pyd.resources import vmconfig
from pyd.vm.accel import ACCELERATORS


@dataclass(frozen=True)
class MachineSettings:
    accel: str
    cpu: str
    cmdline: tuple[str, ...]


def machine_settings(accel: str) -> MachineSettings:
    if accel not in ACCELERATORS:
        raise UsageError(f"unknown accelerator {accel!r}", hint=f"use one of {ACCELERATORS}")
    table = vmconfig("accel")[accel]
    common = vmconfig("kernel")["cmdline"]
    return MachineSettings(accel, str(table["cpu"]), (*common, *table["cmdline"]))
