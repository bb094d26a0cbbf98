"""An instance's disks and keys: made once, kept across restarts. Nothing here deletes
or replaces an existing disk; the keys are replaced only on request (`pyd start
--new-keys`): the guest trusts the ones it was seeded with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyd.errors import PydError
from pyd.host.private_files import instance_dir, make_private, private_dir, write_private_text
from pyd.image.cache import CachedImage
from pyd.instance.disks import create_data_disk, create_overlay
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import name_option
from pyd.instance.seed import Seed, render_seed
from pyd.instance.seed_iso import write_seed_iso
from pyd.ssh.keys import KeyPair, generate_keypair, load_keypair, public_path, write_keypair

CLIENT_COMMENT = "pyd"
HOST_COMMENT = "pyd-guest"


@dataclass(frozen=True)
class SeedSettings:
    instance_id: str
    hostname: str
    proxy: dict[str, str] = field(default_factory=dict)
    timezone: str = ""
    host_access: bool = True  # network.host_access


def _key_files(files: InstanceFiles) -> tuple[Path, ...]:
    return (
        files.client_key,
        public_path(files.client_key),
        files.host_key,
        public_path(files.host_key),
    )


def provisioned(files: InstanceFiles) -> bool:
    """Whether the instance has been booted or set up: a guest may trust its keys."""
    return any(p.exists() for p in (files.state, files.os_disk, files.data_disk))


def instance_keys(files: InstanceFiles) -> tuple[KeyPair, KeyPair]:
    """(client key, guest host key). A new instance gets them here; an existing one must
    still have its own (MissingKeysError): new keys would lock pyd out (the guest keeps
    the client key it was seeded with until it boots on a new seed) and make OpenSSH cry
    "host identification has changed"."""
    missing = [p for p in _key_files(files) if not p.exists()]
    if missing and provisioned(files):
        raise MissingKeysError(files, missing)
    if missing:
        private_dir(files.client_key.parent)
        for key, comment in ((files.client_key, CLIENT_COMMENT), (files.host_key, HOST_COMMENT)):
            if key in missing or public_path(key) in missing:
                write_keypair(key, generate_keypair(comment))
    try:
        return load_keypair(files.client_key), load_keypair(files.host_key)
    except FileNotFoundError as e:  # removed just now
        raise MissingKeysError(files, [Path(str(e.filename))]) from None


def new_keys(files: InstanceFiles) -> None:
    """New client and host keys in place of the old ones (`pyd start --new-keys`): the VM
    must boot on a seed written after this to trust them."""
    private_dir(files.client_key.parent)
    write_keypair(files.client_key, generate_keypair(CLIENT_COMMENT))
    write_keypair(files.host_key, generate_keypair(HOST_COMMENT))
    files.known_hosts.unlink(missing_ok=True)  # pinned the old host key


class MissingKeysError(PydError):
    def __init__(self, files: InstanceFiles, missing: list[Path]) -> None:
        name = files.root.name
        names = ", ".join(str(p.relative_to(files.root)) for p in missing)
        super().__init__(
            f"the SSH keys of instance {name!r} are missing ({names} in {files.root}); "
            "pyd does not replace an instance's keys on its own",
            hint="restore the files from a backup, or run "
            f"`pyd start --new-keys{name_option(name)}`: it makes new keys and restarts the "
            "VM, which installs them from its seed at boot; Docker's data is kept",
        )


def write_seed(files: InstanceFiles, settings: SeedSettings) -> None:
    """Rewritten at every start, so changed settings reach the guest on its next boot."""
    client, host = instance_keys(files)
    seed = Seed(
        instance_id=settings.instance_id,
        hostname=settings.hostname,
        authorized_key=client.public_openssh,
        host_private_key=host.private_openssh,
        host_public_key=host.public_openssh,
        proxy=settings.proxy,
        timezone=settings.timezone,
        host_access=settings.host_access,
    )
    write_seed_iso(render_seed(seed), files.seed_iso)


def ensure_disks(files: InstanceFiles, image: CachedImage, data_gib: int) -> None:
    """Before each boot: the instance's files private (an older pyd left them readable),
    its keys there, its disks made on first use, and an empty serial log that whoever runs
    QEMU (root under libvirt) fills without changing its mode."""
    instance_dir(files.root)
    make_private(files.root)
    instance_keys(files)  # made before the disks, which make the instance an existing one
    write_private_text(files.serial_log, "")
    if not files.os_disk.exists():
        create_overlay(image.file("rootfs.qcow2"), files.os_disk)
    if not files.data_disk.exists():
        create_data_disk(files.data_disk, data_gib)
