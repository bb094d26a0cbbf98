"""The direct-QEMU backend's idea of "running": QEMU's locked pidfile (daemonized) or its
recorded pid + start time (detached), never a bare pid."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyd.host.process_identity import ProcessIdentity, identify, write_identity
from pyd.host.procs import pid_alive
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_process import QemuProcessBackend
from tests.unit.polling import until

# Holds a POSIX write lock on the pidfile the way QEMU's -pidfile does, then lives on (the
# sleep is QEMU's run, not a wait: the test ends it). It has no monitor socket, so it never
# sees a power button either.
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


@contextlib.contextmanager
def _qemu(files: InstanceFiles) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(files.qemu_pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_locked_pidfile_is_running_and_kill_ends_it(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    with _qemu(files) as holder:
        backend = QemuProcessBackend("t", files)
        assert backend.state() is VMState.RUNNING
        backend.kill()
        until(lambda: holder.poll() is not None, 10, 0.05, "QEMU ends")
        assert not files.qemu_pid.exists()
        assert backend.state() is VMState.ABSENT


def test_a_vm_that_does_not_power_off_in_time_is_killed(tmp_path: Path) -> None:
    """`pyd stop`'s timeout: the button is pressed (here there is no monitor to press it
    through), then after `timeout` the process is ended."""
    files = InstanceFiles(tmp_path)
    with _qemu(files) as holder:
        backend = QemuProcessBackend("t", files)
        t0 = time.monotonic()
        backend.shutdown(timeout=0.5)
        assert time.monotonic() - t0 >= 0.5  # it had its time to shut down cleanly
        until(lambda: holder.poll() is not None, 10, 0.05, "QEMU ends")
        assert backend.state() is VMState.ABSENT


# -- QEMU started detached (Windows): its recorded identity, not a pidfile -------------------


def test_a_recorded_identity_whose_pid_now_names_another_process_is_not_running(
    tmp_path: Path,
) -> None:
    files = InstanceFiles(tmp_path)
    files.os_disk.write_bytes(b"")
    me = identify(os.getpid())
    assert me is not None
    write_identity(files.qemu_proc, ProcessIdentity(me.pid, me.started - 3600))  # a reused pid
    backend = QemuProcessBackend("t", files)
    assert backend.state() is VMState.STOPPED
    backend.kill()  # must not end the process that got the pid
    assert pid_alive(os.getpid())
    assert not files.qemu_proc.exists()


def test_a_recorded_identity_is_running_and_kill_ends_it(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        identity = identify(stand_in.pid)
        assert identity is not None
        write_identity(files.qemu_proc, identity)
        backend = QemuProcessBackend("t", files)
        assert backend.state() is VMState.RUNNING  # no monitor answers: counts as running
        backend.kill()
        assert stand_in.wait(10) is not None
        assert backend.state() is VMState.ABSENT
    finally:
        stand_in.kill()
        stand_in.wait()


def test_delete_removes_every_file_of_either_launch(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    for path in (files.qemu_pid, files.qemu_proc, files.qemu_log, files.qmp_port,
                 files.qmp_sock):  # fmt: skip
        path.write_text("x")
    files.qmp_tls.mkdir()
    (files.qmp_tls / "client-key.pem").write_text("x")
    QemuProcessBackend("t", files).delete()
    assert list(tmp_path.iterdir()) == []
