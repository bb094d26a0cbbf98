"""Every file name inside an instance directory, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

OS_DISK = "os.qcow2"  # overlay on the image's read-only rootfs.qcow2
DATA_DISK = "data.qcow2"  # Docker's state; survives OS disk replacement
SEED_ISO = "seed.iso"
SERIAL_LOG = "serial.log"
QEMU_PID = "qemu.pid"
CLIENT_KEY = "ssh/id_ed25519"
HOST_KEY = "ssh/host_ed25519"


class _File:
    """A path inside the instance directory, as a typed read-only attribute."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, files: InstanceFiles, owner: type | None = None) -> Path:
        return files.root / self.name


@dataclass(frozen=True)
class InstanceFiles:
    root: Path

    os_disk = _File(OS_DISK)
    data_disk = _File(DATA_DISK)
    seed_iso = _File(SEED_ISO)
    serial_log = _File(SERIAL_LOG)
    qemu_pid = _File(QEMU_PID)
    client_key = _File(CLIENT_KEY)
    host_key = _File(HOST_KEY)
