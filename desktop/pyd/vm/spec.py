"""The guest's VM description from an image, an instance's files and its settings: the
same GuestSpec for every backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyd.config.arches import Arch
from pyd.config.machine import Accel, MachineSettings
from pyd.errors import UsageError
from pyd.image.cache import CachedImage
from pyd.instance.files import InstanceFiles

DATA_SERIAL = "pyd-data"  # the guest finds Docker's data disk by this serial


@dataclass(frozen=True)
class Disk:
    path: Path
    serial: str
    fmt: str = "qcow2"
    readonly: bool = False


@dataclass(frozen=True)
class GuestSpec:
    arch: Arch
    accel: Accel
    accel_cpu: str
    cpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    disks: tuple[Disk, ...]
    ssh_port: int
    serial_log: Path
    cmdline_extra: tuple[str, ...] = ()
    pidfile: Path | None = None
    gic: str = ""  # arm virt's gic-version ("3", "host"); "" for x86


def check_memory_limit(arch: Arch, machine: MachineSettings, memory_mib: int) -> None:
    """The accelerator's own limit (hvf: 63 GiB for arm64). `pyd start` asks before it makes
    any disk or seed, so a refused start leaves nothing half-made."""
    limit = machine.max_memory_mib
    if limit is not None and memory_mib > limit:
        raise UsageError(
            f"{machine.accel} maps at most {limit} MiB of guest RAM for an {arch.name} guest; "
            f"{memory_mib} MiB asked",
            hint=f"pyd config set memory {limit}MiB (or less)",
        )


def guest_spec(
    arch: Arch,
    machine: MachineSettings,
    image: CachedImage,
    files: InstanceFiles,
    cpus: int,
    memory_mib: int,
    ssh_port: int,
) -> GuestSpec:
    check_memory_limit(arch, machine, memory_mib)
    kernel = image.file(arch.kernel)
    if not kernel.exists():
        kernel = image.file("vmlinuz")
    return GuestSpec(
        arch=arch,
        accel=machine.accel,
        accel_cpu=machine.cpu,
        cpus=cpus,
        memory_mib=memory_mib,
        kernel=kernel,
        initrd=image.file("initrd.img"),
        disks=(
            Disk(files.os_disk, "pyd-os"),
            Disk(files.data_disk, DATA_SERIAL),
            Disk(files.seed_iso, "pyd-seed", fmt="raw", readonly=True),
        ),
        ssh_port=ssh_port,
        serial_log=files.serial_log,
        cmdline_extra=machine.cmdline,
        pidfile=files.qemu_pid,
        gic=machine.gic,
    )
