"""Which QEMU binary runs a guest on this host, and whether it is new enough.

Where to look and the install command per OS are pyd.config.qemu_install's (vmconfig/qemu.toml,
shared with qemu-img); the oldest version accepted per OS and host arch is here. The pure core
(parse_version, check_version) takes the OS as a parameter, so tests cover linux, darwin and
win32 anywhere; the edge (qemu_version, require_qemu_binary) runs `qemu --version` once.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pyd.config.arches import host_arch
from pyd.config.machine import host_system
from pyd.config.qemu_install import qemu_table, require_qemu_tool, upgrade_hint
from pyd.errors import EnvironmentProblem
from pyd.host.detached import no_window

Version = tuple[int, int, int]
VERSION_TIMEOUT = 10.0  # seconds; a first run after install can be slow (antivirus scans)
_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> Version:
    """(major, minor, micro) from `qemu-system-* --version`'s output; a ValueError when the
    text names no QEMU version."""
    m = _VERSION_RE.search(text)
    if m is None:
        first = text.strip().splitlines()[0] if text.strip() else "nothing"
        raise ValueError(f"no QEMU version in {first!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


def minimum_version(system: str, host: str) -> tuple[Version, str]:
    """The oldest QEMU pyd accepts on `system` with a `host` CPU, and why."""
    minimum = qemu_table(system)["minimum"]
    entry = minimum.get(host) or minimum["x86_64"]
    return parse_version(f"QEMU emulator version {entry['version']}"), str(entry["why"])


def check_version(version: Version, program: str, system: str, host: str) -> str | None:
    """None when `version` is new enough on `system`/`host`, else what is wrong (a sentence
    that names the found and the needed version, and why)."""
    needed, why = minimum_version(system, host)
    if version >= needed:
        return None
    return (
        f"{program} is QEMU {format_version(version)}; pyd needs {format_version(needed)} "
        f"or newer here: {why}"
    )


# -- the edge ------------------------------------------------------------------------------


def qemu_version(path: Path) -> Version:
    """The version `path --version` reports; an EnvironmentProblem when it does not run."""
    try:
        done = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT,
            check=False,
            creationflags=no_window(sys.platform).creationflags,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EnvironmentProblem(
            f"{path} does not run: {e}", hint="reinstall QEMU, or check its permissions"
        ) from None
    try:
        return parse_version(done.stdout)
    except ValueError as e:
        detail = (done.stderr or done.stdout).strip()[:200]
        raise EnvironmentProblem(
            f"{path} --version failed ({e}; exit {done.returncode}): {detail}",
            hint="reinstall QEMU",
        ) from None


def require_qemu_binary(arch_qemu: str, system: str | None = None) -> Path:
    """The QEMU binary for `arch_qemu` (e.g. "qemu-system-aarch64") on this host, checked to
    be new enough; an EnvironmentProblem with the install or upgrade command otherwise."""
    system = system or host_system()
    path = require_qemu_tool(arch_qemu, system)
    problem = check_version(qemu_version(path), arch_qemu, system, host_arch())
    if problem is not None:
        raise EnvironmentProblem(
            f"{path}: {problem}", hint=f"upgrade QEMU: {upgrade_hint(arch_qemu, system)}"
        )
    return path
