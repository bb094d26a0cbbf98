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


@dataclass(frozen=True)
class InstanceFiles:
    root: Path

    @property
    def os_disk(self) -> Path:
        return self.root / OS_DISK

    @property
    def data_disk(self) -> Path:
        return self.root / DATA_DISK

    @property
    def seed_iso(self) -> Path:
        return self.root / SEED_ISO

    @property
    def serial_log(self) -> Path:
        return self.root / SERIAL_LOG

    @property
    def qemu_pid(self) -> Path:
        return self.root / QEMU_PID

    @property
    def client_key(self) -> Path:
        return self.root / CLIENT_KEY

    @property
    def host_key(self) -> Path:
        return self.root / HOST_KEY
