"""An instance's disks and keys: made once, kept across restarts. Nothing here deletes
an existing data disk; the OS disk is only replaced on request (image upgrade)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyd.disks import create_data_disk, create_overlay
from pyd.image.cache import CachedImage
from pyd.instance_files import InstanceFiles
from pyd.seed.contents import Seed, SeedMount, render_seed
from pyd.seed.iso import write_seed_iso
from pyd.sshkeys import KeyPair, load_or_create


@dataclass(frozen=True)
class SeedSettings:
    instance_id: str
    hostname: str
    mounts: tuple[SeedMount, ...] = ()
    proxy: dict[str, str] = field(default_factory=dict)
    timezone: str = ""


def instance_keys(files: InstanceFiles) -> tuple[KeyPair, KeyPair]:
    """(client key, guest host key), created on first use with mode 0600."""
    files.client_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    client = load_or_create(files.client_key, "pyd")
    host = load_or_create(files.host_key, "pyd-guest")
    return client, host


def write_seed(files: InstanceFiles, settings: SeedSettings) -> None:
    """Rewritten at every start, so changed settings reach the guest on its next boot."""
    client, host = instance_keys(files)
    seed = Seed(
        instance_id=settings.instance_id,
        hostname=settings.hostname,
        authorized_key=client.public_openssh,
        host_private_key=host.private_openssh,
        host_public_key=host.public_openssh,
        mounts=settings.mounts,
        proxy=settings.proxy,
        timezone=settings.timezone,
    )
    write_seed_iso(render_seed(seed), files.seed_iso)


def ensure_disks(files: InstanceFiles, image: CachedImage, data_gib: int) -> None:
    files.root.mkdir(parents=True, exist_ok=True)
    if not files.os_disk.exists():
        create_overlay(image.file("rootfs.qcow2"), files.os_disk)
    if not files.data_disk.exists():
        create_data_disk(files.data_disk, data_gib)


def replace_os_disk(files: InstanceFiles, image: CachedImage) -> None:
    """A fresh OS disk on `image` (upgrade); the data disk is untouched."""
    fresh = files.os_disk.with_name(files.os_disk.name + ".new")
    fresh.unlink(missing_ok=True)
    create_overlay(image.file("rootfs.qcow2"), fresh)
    fresh.replace(files.os_disk)
