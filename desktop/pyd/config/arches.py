"""Guest architectures, read from vmconfig/arches.toml (the only place they are named)."""

from __future__ import annotations

import platform
from dataclasses import dataclass

from pyd.errors import UsageError
from pyd.resources import vmconfig

# platform.machine() spellings that mean the same architecture.
_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}


@dataclass(frozen=True)
class Arch:
    name: str
    debian: str
    qemu: str
    machine: str
    console: str
    firmware: str  # -bios file name, "" for QEMU's default
    kernel: str  # which image file to boot: "vmlinux" (x86 PVH) or "vmlinuz"


def normalise(machine: str) -> str:
    m = machine.lower()
    return _ALIASES.get(m, m)


def host_arch() -> str:
    """This machine's architecture, by pyd's name for it."""
    return normalise(platform.machine())


def get_arch(name: str | None = None) -> Arch:
    """The architecture `name` (default: the host's), or a UsageError naming the known ones."""
    key = normalise(name or host_arch())
    table = vmconfig("arches")
    if key not in table:
        raise UsageError(
            f"unsupported architecture {key!r}",
            hint=f"pyd knows: {', '.join(sorted(table))}",
        )
    return Arch(name=key, **table[key])
