"""Suspend and resume of the direct-QEMU backend (pyd issue 18): QEMU's migration stream
written to a file, and read back by a QEMU started with `-incoming defer`.

How the stream reaches the file depends on QEMU and its monitor (migration_transport, pure):
- QEMU >= 8.2: the `file:` URI; QEMU opens the path itself, over any monitor (TLS too).
- older QEMU: `fd:`, a descriptor of the file pyd opened, passed by `getfd` (SCM_RIGHTS) on
  the same Unix-socket connection as `migrate`: POSIX only. Over the TLS monitor (Windows)
  an older QEMU has no clean way, so pyd refuses and changes nothing.
Never `exec:`: that runs a shell.

The sequences below take a negotiated QMP session (qmp.qmp_session) and raise
MigrationFailed with QEMU's words; the backend (qemu_process.py) owns the process."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from pyd.errors import UsageError
from pyd.vm.backends.qmp import QmpClient, QmpTransport
from pyd.vm.qemu_binary import Version, format_version

FILE_URI_SINCE: Version = (8, 2, 0)  # QEMU's `file:` migration URI
FD_NAME = "pydsave"  # getfd's name for the save file's descriptor
POLL = 0.05  # seconds between query-migrate polls
# QEMU throttles migration to 32 MiB/s unless told otherwise: a save to a local file is
# limited by the disk only (1 TiB/s: far above any disk, far below QEMU's own limit).
UNLIMITED_BANDWIDTH = 1 << 40


class MigrationTransport(Enum):
    FD = "fd"  # getfd over the Unix-socket monitor
    FILE = "file"  # the file: URI (QEMU >= 8.2)


class MigrationFailed(Exception):
    """QEMU's migration did not complete; the message is QEMU's, when it gave one."""


def migration_transport(
    platform: str, monitor: QmpTransport, version: Version
) -> MigrationTransport:
    """Pure: how QEMU `version`, whose monitor is reached over `monitor`, writes its state to
    a file on `platform` (sys.platform's values). UsageError when it cannot: QEMU older
    than 8.2 behind the TLS monitor (Windows, or PYD_QMP=tls), which passes no descriptors."""
    if version >= FILE_URI_SINCE:
        return MigrationTransport.FILE
    if monitor is QmpTransport.UNIX and platform != "win32":
        return MigrationTransport.FD
    where = "on Windows" if platform == "win32" else "with its monitor over TLS (PYD_QMP=tls)"
    raise UsageError(
        f"suspending a direct-QEMU VM {where} needs QEMU {format_version(FILE_URI_SINCE)} or "
        f"newer (its file: migration); this QEMU is {format_version(version)}. "
        "Nothing was changed: the VM runs on",
        hint=f"upgrade QEMU to {format_version(FILE_URI_SINCE)} or newer; "
        "`pyd stop` powers the VM off meanwhile",
    )


def version_of(reply: Mapping[str, Any]) -> Version:
    """Pure: (major, minor, micro) from QMP's `query-version` reply."""
    qemu = reply.get("return", {}).get("qemu", {})
    try:
        return int(qemu["major"]), int(qemu["minor"]), int(qemu["micro"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"no QEMU version in {str(reply)[:120]}") from None


def migration_uri(transport: MigrationTransport, path: Path) -> str:
    """Pure: migrate's and migrate-incoming's URI for the save at `path`."""
    if transport is MigrationTransport.FD:
        return f"fd:{FD_NAME}"
    return f"file:{path}"


def migration_done(reply: Mapping[str, Any]) -> bool:
    """Pure: whether `query-migrate`'s reply says the migration completed; MigrationFailed
    (with QEMU's error) when it failed or was cancelled; False while it runs."""
    info = reply.get("return", {})
    status = info.get("status", "none") if isinstance(info, dict) else "none"
    if status == "completed":
        return True
    if status in ("failed", "cancelled"):
        raise MigrationFailed(str(info.get("error-desc", f"the migration {status}")))
    return False


def wait_migration(qmp: QmpClient, timeout: float) -> None:
    """Polls query-migrate until the migration completes; MigrationFailed when it fails or
    is still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not migration_done(qmp.execute("query-migrate")):
        if time.monotonic() > deadline:
            raise MigrationFailed(f"the migration did not complete within {timeout:g} s")
        time.sleep(POLL)


def save_state(
    qmp: QmpClient, transport: MigrationTransport, path: Path, fd: int, timeout: float
) -> None:
    """Stops the guest's CPUs and writes QEMU's state to `path` (`fd`: the file opened for
    writing: the fd: transport writes through it; flushed to disk at the end). On a failure
    the guest runs again as it did before (paused stays paused) and MigrationFailed says
    why; QEMU is never quit here."""
    status = qmp.execute("query-status").get("return", {})
    was_running = bool(status.get("running", False))
    qmp.execute("stop")
    try:
        qmp.execute("migrate-set-parameters", {"max-bandwidth": UNLIMITED_BANDWIDTH})
        if transport is MigrationTransport.FD:
            qmp.execute("getfd", {"fdname": FD_NAME}, fds=[fd])
        qmp.execute("migrate", {"uri": migration_uri(transport, path)})
        wait_migration(qmp, timeout)
        # On disk while the guest is stopped: a host that loses power later still resumes.
        os.fsync(fd)
    except (MigrationFailed, OSError) as e:
        _cancel_quietly(qmp)
        why = _why(e)
        if was_running:
            try:
                qmp.execute("cont")
            except OSError as again:
                why += f"; and the guest stayed paused: {_why(again)}"
        raise MigrationFailed(why) from None


def load_state(
    qmp: QmpClient, transport: MigrationTransport, path: Path, fd: int, timeout: float
) -> None:
    """Loads a save into a QEMU started with `-incoming defer` (`fd`: the file opened for
    reading, for the fd: transport) and lets the guest run. MigrationFailed with QEMU's
    words when it fails; QEMU 7.2 exits then, which closes the monitor (an OSError)."""
    try:
        if transport is MigrationTransport.FD:
            qmp.execute("getfd", {"fdname": FD_NAME}, fds=[fd])
        qmp.execute("migrate-incoming", {"uri": migration_uri(transport, path)})
        wait_migration(qmp, timeout)
        qmp.execute("cont")
    except OSError as e:
        raise MigrationFailed(_why(e)) from None


def _cancel_quietly(qmp: QmpClient) -> None:
    # Nothing may run to cancel, or the monitor is gone: the caller says why.
    with contextlib.suppress(OSError):
        qmp.execute("migrate_cancel")


def _why(e: BaseException) -> str:
    desc = getattr(e, "desc", None)  # a QmpCommandError: QEMU's own words
    return str(desc) if desc else str(e)
