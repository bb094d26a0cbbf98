"""What pyd chose for an instance at its first start and keeps across restarts: the SSH
port on host loopback, the image its OS disk sits on, the guest's architecture and the VM
backend it booted with. Not user settings (that is config.toml); a JSON file pyd alone
writes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pyd.config.machine import Accel
from pyd.config.settings import BackendName
from pyd.errors import PydError
from pyd.host.atomicfile import write_atomic
from pyd.instance.files import InstanceFiles


@dataclass(frozen=True)
class InstanceState:
    ssh_port: int
    image_key: str
    accel: Accel
    # Fixed at the first start (`pyd start --arch`): the OS disk is an image of this arch.
    arch: str = "x86_64"
    # What ran the VM at its last boot (libvirt or qemu); `backend = "auto"` keeps to it, so a
    # VM that runs under libvirtd is never booted again by QEMU directly while libvirtd is
    # down. None in files written before pyd kept it.
    backend: BackendName | None = None


def _arch_of(data: dict[str, object]) -> str:
    """The stored arch; files written before pyd kept it name it only in the image key
    (cache.image_key: ARCH-HASH)."""
    arch = data.get("arch")
    return str(arch) if arch else str(data["image_key"]).rsplit("-", 1)[0]


def _backend_of(data: dict[str, object]) -> BackendName | None:
    """The recorded backend: a concrete one (never auto), or None when not recorded."""
    value = data.get("backend")
    if value is None:
        return None
    backend = BackendName(str(value))  # ValueError: reported as a corrupted file
    if backend is BackendName.AUTO:
        raise ValueError("backend 'auto' is a setting, not what ran the VM")
    return backend


def parse_state(text: str, origin: str) -> InstanceState:
    try:
        data = json.loads(text)
        return InstanceState(
            ssh_port=int(data["ssh_port"]),
            image_key=str(data["image_key"]),
            accel=Accel(data["accel"]),
            arch=_arch_of(data),
            backend=_backend_of(data),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise PydError(
            f"the instance state file {origin} is corrupted ({e})",
            hint=f"remove it ({origin}): the next `pyd start` writes it again with a free "
            "SSH port and the cached image (the disks, keys and settings are kept). Or restore "
            "it: its image_key must name the image the OS disk was made on (see `pyd image "
            "ls` and `qemu-img info` of os.qcow2)",
        ) from None


def load_state(path: Path) -> InstanceState | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return parse_state(text, str(path))


def save_state(path: Path, state: InstanceState) -> None:
    write_atomic(path, json.dumps(asdict(state), indent=2) + "\n")


def instance_arch(files: InstanceFiles) -> str | None:
    """The instance's guest architecture: state.json's, else the one its first start was
    asked for (kept even when that start failed before the boot); None when never chosen."""
    state = load_state(files.state)
    if state is not None:
        return state.arch
    try:
        # A damaged file reads as some unknown arch, which a start then refuses with a hint.
        return files.arch.read_text(errors="replace").strip() or None
    except FileNotFoundError:
        return None


def save_arch(files: InstanceFiles, arch: str) -> None:
    write_atomic(files.arch, arch + "\n")
