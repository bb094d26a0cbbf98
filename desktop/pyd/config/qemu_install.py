"""Where QEMU's programs (qemu-system-*, qemu-img) are on each host OS, and the commands that
install or upgrade them: vmconfig/qemu.toml read as values. Below the VM and the instance
layers, so the disks (qemu-img) and the direct-QEMU backend look in the same places, with the
same hint, and `pyd doctor` sees what they see.

Pure (the OS is a parameter): find_qemu, the hints; the edge: locate_qemu, require_qemu_tool.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Any

from pyd.config.machine import host_system
from pyd.errors import EnvironmentProblem
from pyd.host.programs import Exists, exe_name, find_in, is_executable, search_dirs
from pyd.resources import vmconfig

QEMU_IMG = "qemu-img"


def qemu_table(system: str) -> dict[str, Any]:
    table = vmconfig("qemu")
    return dict(table.get(system, table["linux"]))


def binary_name(program: str, system: str) -> str:
    """`program` as a file name on `system` (".exe" on Windows)."""
    return exe_name(program, system)


def qemu_dirs(system: str, path_env: str) -> list[PurePath]:
    """The folders QEMU may be in on `system`, in order: vmconfig's list with PATH expanded."""
    return search_dirs(system, qemu_table(system)["search"], path_env)


def find_qemu(program: str, system: str, path_env: str, exists: Exists) -> PurePath | None:
    """The first `program` (e.g. "qemu-system-x86_64", "qemu-img") found in `system`'s search
    order, or None. `exists` says whether a file is there (the edge passes an access check)."""
    return find_in(qemu_dirs(system, path_env), binary_name(program, system), exists)


def _package(program: str, system: str) -> str:
    return str(qemu_table(system).get("packages", {}).get(program, "qemu-system"))


def install_hint(program: str, system: str) -> str:
    return str(qemu_table(system)["install"]).format(package=_package(program, system))


def upgrade_hint(program: str, system: str) -> str:
    return str(qemu_table(system)["upgrade"]).format(package=_package(program, system))


def not_found_message(program: str, system: str) -> str:
    places = ", ".join(str(d) for d in qemu_table(system)["search"])
    return f"{binary_name(program, system)} is not installed (looked in: {places})"


# -- the edge ------------------------------------------------------------------------------


def locate_qemu(program: str, system: str | None = None) -> Path | None:
    """Where `program` is on this host, or None."""
    found = find_qemu(
        program, system or host_system(), os.environ.get("PATH", ""), is_executable
    )
    return None if found is None else Path(found)


def require_qemu_tool(program: str, system: str | None = None) -> Path:
    """Where `program` (e.g. "qemu-img") is on this host; an EnvironmentProblem with the
    command that installs it otherwise."""
    system = system or host_system()
    path = locate_qemu(program, system)
    if path is None:
        raise EnvironmentProblem(
            not_found_message(program, system),
            hint=f"install QEMU: {install_hint(program, system)}",
        )
    return path
