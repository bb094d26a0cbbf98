"""Guest architectures, read from vmconfig/arches.toml (the only place they are named)."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from dataclasses import dataclass

from pyd.errors import UsageError
from pyd.resources import vmconfig

SYSCTL = "/usr/sbin/sysctl"  # macOS's, whatever PATH holds
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
    """This machine's architecture, by pyd's name for it: the hardware's, not the Python
    process's (see host_arch_from)."""
    return host_arch_from(platform.machine(), sys.platform, under_rosetta())


def host_arch_from(machine: str, system: str, translated: bool) -> str:
    """Pure: the host's architecture from platform.machine(), sys.platform and whether this
    process is translated. An x86_64 Python on Apple Silicon runs under Rosetta 2 and says
    x86_64; the Mac is arm64, and its guest must be too (hvf runs only the host's own
    architecture: an x86_64 guest there would be emulated)."""
    name = normalise(machine)
    if system == "darwin" and translated and name == "x86_64":
        return "aarch64"
    return name


def translated_from_sysctl(returncode: int, stdout: str) -> bool:
    """Pure: `sysctl -n sysctl.proc_translated` answers 1 in a process Rosetta translates,
    0 in a native one, and fails on Intel Macs, which have no such key."""
    return returncode == 0 and stdout.strip() == "1"


@functools.cache
def under_rosetta() -> bool:
    """This Python runs under Rosetta 2 (macOS only; asked once per process)."""
    if sys.platform != "darwin":
        return False
    try:
        done = subprocess.run(
            [SYSCTL, "-n", "sysctl.proc_translated"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False  # no answer: take Python's word for the architecture
    return translated_from_sysctl(done.returncode, done.stdout)


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
