"""Stopping a process pyd recorded (host.process_identity) only while it is still that
process: a pid the OS has since given to another process is never signalled or killed.
psutil checks the start time again inside terminate()/kill(), so the window between the
check and the act is psutil's own few microseconds, not ours."""

from __future__ import annotations

from pathlib import Path

import psutil

from pyd.host.process_identity import SAME_START, ProcessIdentity, identify, start_time


def read_pid_record(path: Path) -> ProcessIdentity | None:
    """The identity recorded at `path`; a bare pid (a file an older pyd wrote) is named by
    whatever runs under that pid now, so callers rely on it only while they know its writer
    still runs (it holds its lock). None when the file is missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    found = ProcessIdentity.from_json(text)
    if found is not None:
        return found
    try:
        pid = int(text.strip())
    except ValueError:
        return None
    return identify(pid) if pid > 0 else None


def _same(identity: ProcessIdentity) -> psutil.Process | None:
    try:
        proc = psutil.Process(identity.pid)
        if abs(start_time(proc) - identity.started) >= SAME_START:
            return None  # the pid is another process's now
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def terminate_process(identity: ProcessIdentity) -> bool:
    """SIGTERM (Windows: TerminateProcess, no cleanup) to the recorded process; False when
    it no longer runs."""
    proc = _same(identity)
    if proc is None:
        return False
    try:
        proc.terminate()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return True


def kill_process(identity: ProcessIdentity) -> bool:
    """SIGKILL (Windows: TerminateProcess) to the recorded process; False when it no longer
    runs."""
    proc = _same(identity)
    if proc is None:
        return False
    try:
        proc.kill()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return True
