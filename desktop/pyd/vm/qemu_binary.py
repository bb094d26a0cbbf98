"""Which QEMU binary runs a guest on this host, and whether it is new enough.

Where to look, the oldest version accepted and the install command per OS live in
vmconfig/qemu.toml. The pure core (find_qemu, parse_version, check_version, the hints) takes
the OS as a parameter, so tests cover linux, darwin and win32 anywhere; the edge
(qemu_version, require_qemu_binary) runs `qemu --version` once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from pyd.config.arches import host_arch
from pyd.config.machine import host_system
from pyd.errors import EnvironmentProblem
from pyd.resources import vmconfig

PATH_TOKEN = "PATH"  # in a search list: the PATH environment variable's directories
Version = tuple[int, int, int]
VERSION_TIMEOUT = 10.0  # seconds; a first run after install can be slow (antivirus scans)
_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


def _table(system: str) -> dict[str, Any]:
    table = vmconfig("qemu")
    return dict(table.get(system, table["linux"]))


def _pure_path(system: str, text: str) -> PurePath:
    return PureWindowsPath(text) if system == "win32" else PurePosixPath(text)


def binary_name(program: str, system: str) -> str:
    """`program` as a file name on `system` (".exe" on Windows)."""
    return program + str(_table(system)["suffix"])


def search_dirs(system: str, path_env: str) -> list[PurePath]:
    """The directories to look in, in order: vmconfig's list with PATH expanded."""
    sep = ";" if system == "win32" else ":"
    dirs: list[PurePath] = []
    for entry in _table(system)["search"]:
        if entry == PATH_TOKEN:
            for part in path_env.split(sep):
                part = part.strip().strip('"')  # Windows allows quoted PATH entries
                if part:
                    dirs.append(_pure_path(system, part))
        else:
            dirs.append(_pure_path(system, entry))
    return dirs


def find_qemu(
    program: str, system: str, path_env: str, exists: Callable[[PurePath], bool]
) -> PurePath | None:
    """The first `program` (e.g. "qemu-system-x86_64") found in `system`'s search order, or
    None. `exists` says whether a file is there (the edge passes an os.access check)."""
    name = binary_name(program, system)
    for folder in search_dirs(system, path_env):
        candidate = folder / name
        if exists(candidate):
            return candidate
    return None


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
    minimum = _table(system)["minimum"]
    entry = minimum.get(host) or minimum["x86_64"]
    return parse_version(f"QEMU emulator version {entry['version']}"), str(entry["why"])


def install_hint(program: str, system: str) -> str:
    package = _table(system).get("packages", {}).get(program, "qemu-system")
    return str(_table(system)["install"]).format(package=package)


def upgrade_hint(program: str, system: str) -> str:
    package = _table(system).get("packages", {}).get(program, "qemu-system")
    return str(_table(system)["upgrade"]).format(package=package)


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


def not_found_message(program: str, system: str) -> str:
    places = ", ".join(str(d) for d in _table(system)["search"])
    return f"{binary_name(program, system)} is not installed (looked in: {places})"


# -- the edge ------------------------------------------------------------------------------


def _is_executable(path: PurePath) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.X_OK)


def locate_qemu(program: str, system: str | None = None) -> Path | None:
    """Where `program` is on this host, or None."""
    found = find_qemu(
        program, system or host_system(), os.environ.get("PATH", ""), _is_executable
    )
    return None if found is None else Path(found)


def qemu_version(path: Path) -> Version:
    """The version `path --version` reports; an EnvironmentProblem when it does not run."""
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":  # no console window flashing up for a GUI-less check
        kwargs["creationflags"] = subprocess.CREATE_NO_WINDOW
    try:
        done = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT,
            check=False,
            **kwargs,
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
    path = locate_qemu(arch_qemu, system)
    if path is None:
        raise EnvironmentProblem(
            not_found_message(arch_qemu, system),
            hint=f"install QEMU: {install_hint(arch_qemu, system)}",
        )
    problem = check_version(qemu_version(path), arch_qemu, system, host_arch())
    if problem is not None:
        raise EnvironmentProblem(
            f"{path}: {problem}", hint=f"upgrade QEMU: {upgrade_hint(arch_qemu, system)}"
        )
    return path
