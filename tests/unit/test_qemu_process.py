"""The direct-QEMU backend's idea of "running": QEMU's locked pidfile, not a bare pid."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from pyd.host.procs import pid_alive
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_process import QemuProcessBackend

# Holds a POSIX write lock on the pidfile the way QEMU's -pidfile does, then sleeps.
_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_stale_pidfile_naming_a_live_process_is_not_a_running_vm(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    files.os_disk.write_bytes(b"")
    files.qemu_pid.write_text(f"{os.getpid()}\n")  # alive, but not QEMU and not locked
    backend = QemuProcessBackend("t", files)
    assert backend.state() is VMState.STOPPED
    backend.kill()  # must not signal the process the stale file names
    assert pid_alive(os.getpid())


def test_a_locked_pidfile_is_running_and_kill_ends_it(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(files.qemu_pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        backend = QemuProcessBackend("t", files)
        assert backend.state() is VMState.RUNNING
        backend.kill()
        deadline = time.monotonic() + 10
        while holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert holder.poll() is not None
        assert not files.qemu_pid.exists()
        assert backend.state() is VMState.ABSENT
    finally:
        holder.kill()
        holder.wait()
