"""The one small interface every VM backend (libvirt, direct QEMU) offers the lifecycle."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Protocol, runtime_checkable

from pyd.vm.spec import GuestSpec


class VMState(enum.Enum):
    ABSENT = "absent"  # nothing defined for this instance
    STOPPED = "stopped"  # defined, not running
    RUNNING = "running"  # running: the guest exists and holds its disks
    PAUSED = "paused"  # exists and holds its disks, but its CPUs are stopped (virsh suspend)

    @property
    def exists(self) -> bool:
        """A QEMU process holds the disks: running or paused. Never boot it a second time."""
        return self in (VMState.RUNNING, VMState.PAUSED)


class VMBackend(Protocol):
    """One instance's VM. `name` is the backend's own name for it (libvirt: pyd-NAME)."""

    name: str

    def state(self) -> VMState: ...

    def start(self, spec: GuestSpec) -> None:
        """(Re)define the VM from `spec` and start it. Only called when it does not exist."""

    def resume(self) -> None:
        """Lets a PAUSED VM run again (no-op when it is not paused)."""

    def shutdown(self, timeout: float) -> None:
        """Clean poweroff through the guest's ACPI button (resumed first, when paused: a
        paused guest sees no button); forced after `timeout` seconds."""

    def kill(self) -> None:
        """Forced poweroff now (no-op when not running)."""

    def delete(self) -> None:
        """Remove the definition (the VM must be stopped). Never touches disks or files."""


@runtime_checkable
class SuspendableBackend(VMBackend, Protocol):
    """A backend that can save a VM's memory and device state to a file and run it again
    from there (`pyd suspend`, then `pyd start`): libvirt, and direct QEMU (qemu_migrate.py)."""

    def emulator_version(self) -> str:
        """QEMU's version, as a save records it (a save restores only on the same one)."""

    def shape(self) -> tuple[int, int]:
        """The running VM's (cpus, memory MiB): what it booted with, not today's config."""

    def save(self, path: Path) -> None:
        """Saves the running or paused VM to `path` (0600) and stops it; a restore of it
        resumes it running."""

    def restore(self, path: Path) -> None:
        """Runs the VM again from a save made by `save`; the file is left where it is."""
