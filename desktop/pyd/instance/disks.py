"""Instance disks as qcow2 files: a copy-on-write overlay on the read-only base image
(the OS disk) and the persistent data disk Docker's state lives on."""

from __future__ import annotations

from pathlib import Path

from pyd.errors import PydError
from pyd.host.private_files import FILE_MODE
from pyd.image.prune import KEY, record_use
from pyd.image.qemu_img import run_qemu_img
from pyd.instance.files import ARCH, STATE


def _qemu_img(*args: str) -> None:
    done = run_qemu_img(*args)
    if done.returncode != 0:
        raise PydError(f"qemu-img {args[0]} failed: {done.stderr.strip()}")


def create_overlay(base: Path, dest: Path) -> None:
    """A new OS disk: writes go to `dest`, `base` is never modified. A base in the image
    cache (KEY/rootfs.qcow2) gets a use record first, so that `pyd image prune` of any
    PYD_HOME keeps it."""
    record_image_use(base, dest)
    _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base.resolve()), str(dest))
    dest.chmod(FILE_MODE)  # Docker's data: qemu-img makes it 0644


def record_image_use(base: Path, os_disk: Path) -> None:
    """The instance of `os_disk` uses the cached image `base` belongs to (image.prune)."""
    image = base.resolve().parent
    if KEY.match(image.name):
        root = os_disk.parent
        record_use(image.parent, image.name, os_disk, root / STATE, root / ARCH)


def create_data_disk(dest: Path, size_gib: int) -> None:
    """A blank, sparse data disk; the guest formats it on first boot. Never overwrites."""
    if dest.exists():
        raise PydError(f"refusing to overwrite the data disk {dest}")
    _qemu_img("create", "-q", "-f", "qcow2", str(dest), f"{size_gib}G")
    dest.chmod(FILE_MODE)


def disk_size_gib(path: Path) -> int | None:
    """The virtual size of the qcow2 disk at `path` in whole GiB, from its header (offset 24,
    big-endian): what the guest sees, whatever config.toml says. None without a readable one."""
    try:
        with path.open("rb") as f:
            header = f.read(32)
    except OSError:
        return None
    if len(header) < 32 or header[:4] != b"QFI\xfb":
        return None
    return int.from_bytes(header[24:32], "big") // (1024**3)
