"""How full Docker's data disk in the guest is, for `pyd status`: a full disk otherwise
shows only as failing builds and pulls. The agent asks the guest's `df` now and then."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import paramiko

from pyd.ssh.link_errors import LINK_ERRORS

DOCKER_DIR = "/var/lib/docker"  # on the data disk (guest-image/overlay/usr/lib/pyd/datadisk)
DF_COMMAND = f"df -Pk {DOCKER_DIR}"
NEARLY_FULL = 90  # percent: status says so
DF_TIMEOUT = 15.0  # an emulated guest can be slow; the agent asks from a thread of its own


@dataclass(frozen=True)
class DiskUsage:
    used_kib: int
    size_kib: int

    @property
    def percent(self) -> int:
        return round(100 * self.used_kib / self.size_kib) if self.size_kib else 0

    def describe(self) -> str:
        """e.g. "1.2 GiB of 7.8 GiB used (15%)", with a warning when nearly full."""
        text = f"{_gib(self.used_kib)} of {_gib(self.size_kib)} used ({self.percent}%)"
        if self.percent >= NEARLY_FULL:
            text += "; nearly full: `docker system prune` frees space"
        return text


def parse_df(text: str) -> DiskUsage | None:
    """Pure: POSIX `df -Pk` output (a header, then one line per file system)."""
    lines = [line.split() for line in text.strip().splitlines()[1:]]
    if not lines or len(lines[-1]) < 6:
        return None
    fields = lines[-1]
    try:
        return DiskUsage(used_kib=int(fields[2]), size_kib=int(fields[1]))
    except ValueError:
        return None


def guest_disk_usage(client: paramiko.SSHClient) -> DiskUsage | None:
    """The data disk's use as the guest's df reports it; None when it cannot be asked."""
    with contextlib.suppress(*LINK_ERRORS):
        _stdin, stdout, _stderr = client.exec_command(DF_COMMAND, timeout=DF_TIMEOUT)
        return parse_df(stdout.read().decode(errors="replace"))
    return None


def _gib(kib: int) -> str:
    return f"{kib / 1024 / 1024:.1f} GiB"
