"""Runs a guest with QEMU directly (no libvirt): Windows hosts, and image tests."""

from __future__ import annotations

import shutil
import subprocess

from pyd.backends.qemu_cmdline import GuestSpec, qemu_argv
from pyd.errors import EnvironmentProblem


def launch(spec: GuestSpec) -> subprocess.Popen[bytes]:
    argv = qemu_argv(spec)
    if not shutil.which(argv[0]):
        raise EnvironmentProblem(
            f"{argv[0]} is not installed",
            hint="install QEMU (Debian: apt-get install qemu-system-x86; macOS: brew install qemu)",
        )
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
