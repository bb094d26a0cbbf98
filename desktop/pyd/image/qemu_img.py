"""qemu-img, run where QEMU lives on this OS (not only PATH: Windows' QEMU installer leaves
C:\\Program Files\\qemu off it), with no console window flashing up on Windows. One runner
for the instance disks, image listing and publishing."""

from __future__ import annotations

import subprocess
import sys

from pyd.config.qemu_install import QEMU_IMG, locate_qemu, require_qemu_tool
from pyd.errors import EnvironmentProblem
from pyd.host.detached import no_window


def available() -> bool:
    return locate_qemu(QEMU_IMG) is not None


def run_qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    """qemu-img ARGS, its output captured; an EnvironmentProblem with the install command when
    it is missing or does not run. The caller judges the exit code."""
    exe = require_qemu_tool(QEMU_IMG)
    try:
        return subprocess.run(
            [str(exe), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            creationflags=no_window(sys.platform).creationflags,
        )
    except OSError as e:
        raise EnvironmentProblem(f"{exe} does not run: {e}", hint="reinstall QEMU") from None
