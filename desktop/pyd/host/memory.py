"""The host's physical memory, so that a VM asking for more is refused before it starts."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

from pyd.errors import UsageError


def host_memory_mib() -> int | None:
    """Total physical memory in MiB; None when this platform does not say."""
    try:
        if sys.platform == "win32":
            return _windows()
        if sys.platform == "darwin":
            out = subprocess.run(
                ["sysctl", "-n", "hw.memsize"], capture_output=True, text=True, timeout=5
            ).stdout
            return int(out.strip()) // (1024 * 1024)
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def check_memory(memory_mib: int, host_mib: int | None) -> None:
    """Pure: a VM cannot have more memory than the host (QEMU would fail as it starts)."""
    if host_mib is None or memory_mib <= host_mib:
        return
    suggest = max(host_mib // 2 // 1024, 1)
    raise UsageError(
        f"memory {_gib(memory_mib)} is more than this host has ({_gib(host_mib)})",
        hint=f"give the VM less, e.g. `--memory {suggest}GiB` "
        f"(`pyd config set memory {suggest}GiB` stores it)",
    )


def _gib(mib: int) -> str:
    return f"{mib / 1024:.1f} GiB"


def _windows() -> int | None:
    class MemoryStatusEx(ctypes.Structure):
        _fields_ = [
            ("dwLength", ctypes.c_ulong),
            ("dwMemoryLoad", ctypes.c_ulong),
            ("ullTotalPhys", ctypes.c_ulonglong),
            ("ullAvailPhys", ctypes.c_ulonglong),
            ("ullTotalPageFile", ctypes.c_ulonglong),
            ("ullAvailPageFile", ctypes.c_ulonglong),
            ("ullTotalVirtual", ctypes.c_ulonglong),
            ("ullAvailVirtual", ctypes.c_ulonglong),
            ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
        ]

    status = MemoryStatusEx()
    status.dwLength = ctypes.sizeof(MemoryStatusEx)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined,unused-ignore]
        return None
    return int(status.ullTotalPhys) // (1024 * 1024)
