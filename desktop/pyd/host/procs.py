"""Other processes by pid (or by pid + start time): alive or not, and asking one to stop.
Portable, because os.kill(pid, 0) on Windows does not probe, it terminates, and Windows has
no SIGKILL (psutil's kill is TerminateProcess there)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

import psutil

from pyd.host.process_identity import SAME_START, ProcessIdentity, is_running, start_time


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _win_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A dead child nobody reaped yet still answers kill(0) on Linux."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def _win_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    code = ctypes.c_ulong()
    kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
    kernel32.CloseHandle(handle)
    return code.value == 259  # STILL_ACTIVE


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout`. True when the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        if sys.platform == "win32":
            os.kill(pid, signal.SIGTERM)  # TerminateProcess: as final as it gets there
        else:
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    return not pid_alive(pid)


def end_process(identity: ProcessIdentity, timeout: float) -> bool:
    """Ends the very process `identity` names (never another that got its pid): terminate
    (SIGTERM; TerminateProcess on Windows), then kill after `timeout`. True when it is gone."""
    try:
        proc = psutil.Process(identity.pid)
        if abs(start_time(proc) - identity.started) >= SAME_START:
            return True  # the pid is another process's now: ours is gone
        proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    except psutil.NoSuchProcess:
        return True
    except (psutil.AccessDenied, psutil.TimeoutExpired):
        return not is_running(identity)
    return True
