"""How the direct-QEMU backend starts QEMU, per platform: a pure plan (values in, values out,
so tests here assert the Windows flags) and a thin edge that runs it.

- POSIX (linux, darwin): `-daemonize`. QEMU returns once it has opened its disks and ports,
  so its errors come back synchronously; its pidfile's lock says it lives.
- Windows: QEMU has no -daemonize there. Started detached the way pyd starts every process
  that outlives it (host/detached.py: no console, its own process group, out of the
  caller's job object, again without breakaway when the job forbids it), stdout/stderr to a
  0600 log in the instance directory; its identity (pid + start time) is recorded, so a
  reused pid is never taken for it. The start succeeds once QMP answers; if QEMU exits
  first its log's tail is the error; after a timeout it is killed.

PYD_QEMU_LAUNCH=detached forces the detached launch on POSIX (a new session stands in for
the Windows flags), so tests run the Windows path here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pyd.errors import PydError
from pyd.host.detached import LaunchFlags, detached, launch_detached
from pyd.host.private_files import FILE_MODE, QEMU_UMASK
from pyd.host.process_identity import ProcessIdentity, identify, write_identity
from pyd.host.procs import end_process

WINDOWS_DETACHED_FLAGS = detached("win32").creationflags
LOG_TAIL = 2000  # characters of QEMU's log quoted when it fails to start


class LaunchStyle(Enum):
    DAEMONIZE = "daemonize"
    DETACHED = "detached"


@dataclass(frozen=True)
class LaunchPlan:
    style: LaunchStyle
    argv_extra: tuple[str, ...]  # appended to QEMU's command line
    creationflags: int  # Popen's, Windows only (0 elsewhere)
    start_new_session: bool  # Popen's, POSIX only
    umask: int  # Popen's (-1: leave it), so QEMU's own files are the owner's


def launch_plan(platform: str, environ: Mapping[str, str]) -> LaunchPlan:
    """Pure: how QEMU is started on `platform` (sys.platform's values)."""
    windows = platform == "win32"
    umask = -1 if windows else QEMU_UMASK
    if windows or environ.get("PYD_QEMU_LAUNCH", "") == "detached":
        # On POSIX a new session stands in for the Windows flags (what detached() gives).
        flags = detached(platform)
        return LaunchPlan(
            LaunchStyle.DETACHED, (), flags.creationflags, flags.start_new_session, umask
        )
    return LaunchPlan(LaunchStyle.DAEMONIZE, ("-daemonize",), 0, False, umask)


def run_daemonized(argv: list[str], plan: LaunchPlan, hint: str) -> None:
    """QEMU with -daemonize: returns once QEMU runs; PydError with its stderr otherwise."""
    done = subprocess.run(
        [*argv, *plan.argv_extra],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        umask=plan.umask,
    )
    if done.returncode != 0:
        raise PydError(
            f"QEMU failed to start: {done.stderr.decode(errors='replace').strip()}", hint=hint
        )


def run_detached(
    argv: list[str],
    plan: LaunchPlan,
    log: Path,
    record: Path,
    ready: Callable[[], bool],
    timeout: float,
) -> ProcessIdentity:
    """QEMU detached, its output in `log` (0600), its identity in `record`; returns once
    `ready()` (QMP answers). PydError with the log's tail if QEMU exits first; killed and
    PydError after `timeout`."""
    record.unlink(missing_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        proc = launch_detached(
            [*argv, *plan.argv_extra],
            LaunchFlags(plan.creationflags, plan.start_new_session),
            stdout=fd,
            stderr=fd,
            umask=plan.umask,
        )
    finally:
        os.close(fd)
    identity = identify(proc.pid)
    if identity is None:  # gone already: its log says why
        proc.wait()
        raise _failed(log, proc.returncode)
    write_identity(record, identity)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            record.unlink(missing_ok=True)
            raise _failed(log, proc.returncode)
        if ready():
            return identity
        if time.monotonic() > deadline:
            end_process(identity, timeout=5)
            proc.poll()
            record.unlink(missing_ok=True)
            raise PydError(
                f"QEMU's monitor did not answer within {timeout:g} s: QEMU was stopped",
                hint=f"see {log}",
            )
        time.sleep(0.05)


def log_tail(log: Path, limit: int = LOG_TAIL) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return text[-limit:]


def _failed(log: Path, code: int | None) -> PydError:
    tail = log_tail(log) or f"no output (exit status {code})"
    return PydError(f"QEMU failed to start: {tail}", hint=f"see {log}")


def current_plan() -> LaunchPlan:
    return launch_plan(sys.platform, os.environ)
