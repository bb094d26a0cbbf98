"""The direct-QEMU backend's idea of "running": QEMU's locked pidfile (daemonized) or its
recorded pid + start time (detached), never a bare pid; and a start whose TLS monitor port
is taken before QEMU binds it (a real QEMU without a machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.errors import PydError
from pyd.host.loopback import free_loopback_port
from pyd.host.process_identity import ProcessIdentity, identify, write_identity
from pyd.host.procs import pid_alive
from pyd.instance.files import InstanceFiles
from pyd.vm.backends import qemu_process
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_process import QemuProcessBackend
from pyd.vm.backends.qmp import vm_paused
from pyd.vm.spec import GuestSpec
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


# -- the TLS monitor's port, taken between pyd's choice and QEMU's bind -----------------------

QEMU = "qemu-system-x86_64"


def _spec(tmp: Path) -> GuestSpec:
    return GuestSpec(
        arch=get_arch("x86_64"),
        accel="tcg",
        accel_cpu="max",
        cpus=1,
        memory_mib=128,
        kernel=tmp / "vmlinux",
        initrd=tmp / "initrd.img",
        disks=(),
        ssh_port=0,
        serial_log=tmp / "serial.log",
        pidfile=tmp / "qemu.pid",
    )


def _no_guest(spec: GuestSpec) -> list[str]:
    """A real QEMU with its monitor and pidfile but no machine: it starts in a blink."""
    assert spec.pidfile is not None
    return [QEMU, "-machine", "none", "-display", "none", "-nodefaults", "-pidfile",
            str(spec.pidfile)]  # fmt: skip


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"no {QEMU}")
@pytest.mark.parametrize("launch", ["daemonize", "detached"])
def test_a_monitor_port_taken_before_qemu_binds_it_is_replaced_by_a_fresh_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launch: str
) -> None:
    """Someone takes the chosen port first (here the test holds it): QEMU exits with
    "Failed to find an available port", and the start goes on with another port."""
    monkeypatch.setenv("PYD_QMP", "tls")
    monkeypatch.setenv("PYD_QEMU_LAUNCH", launch)
    monkeypatch.setattr(qemu_process, "qemu_argv", _no_guest)
    chosen: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as held:
        taken = int(held.getsockname()[1])

        def choose() -> int:
            chosen.append(taken if not chosen else free_loopback_port())
            return chosen[-1]

        monkeypatch.setattr(qemu_process, "free_loopback_port", choose)
        files = InstanceFiles(tmp_path)
        backend = QemuProcessBackend("t", files)
        try:
            backend.start(_spec(tmp_path))
            assert chosen[0] == taken and len(chosen) == 2
            assert int(files.qmp_port.read_text()) == chosen[1] != taken
            assert backend.state() is VMState.RUNNING
            assert vm_paused(backend._qmp("query-status")) is False  # its monitor answers
        finally:
            backend.kill()
    assert backend.state() is VMState.ABSENT


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"no {QEMU}")
def test_a_monitor_port_taken_at_every_try_fails_with_qemus_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_QMP", "tls")
    monkeypatch.setenv("PYD_QEMU_LAUNCH", "detached")
    monkeypatch.setattr(qemu_process, "qemu_argv", _no_guest)
    chosen: list[int] = []
    # Bound, not listening: QEMU's bind fails all the same, and pyd's probe of the monitor
    # is refused at once instead of waiting out a handshake with a listener that never answers.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = int(held.getsockname()[1])

        def choose() -> int:
            chosen.append(taken)
            return taken

        monkeypatch.setattr(qemu_process, "free_loopback_port", choose)
        backend = QemuProcessBackend("t", InstanceFiles(tmp_path))
        with pytest.raises(PydError, match="Failed to find an available port"):
            backend.start(_spec(tmp_path))
    assert len(chosen) == qemu_process.MONITOR_PORT_ATTEMPTS
    assert backend.state() is VMState.ABSENT


@pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"no {QEMU}")
@pytest.mark.parametrize("launch", ["daemonize", "detached"])
def test_a_unix_socket_monitor_starts_at_the_first_try_and_is_the_owners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launch: str
) -> None:
    monkeypatch.delenv("PYD_QMP", raising=False)
    monkeypatch.setenv("PYD_QEMU_LAUNCH", launch)
    monkeypatch.setattr(qemu_process, "qemu_argv", _no_guest)

    def no_port() -> int:
        raise AssertionError("a port chosen for a Unix socket monitor")

    monkeypatch.setattr(qemu_process, "free_loopback_port", no_port)
    files = InstanceFiles(tmp_path)
    backend = QemuProcessBackend("t", files)
    try:
        backend.start(_spec(tmp_path))
        assert backend.state() is VMState.RUNNING
        assert stat.S_IMODE(files.qmp_sock.lstat().st_mode) == 0o600
        assert not files.qmp_port.exists()
    finally:
        backend.kill()
    assert backend.state() is VMState.ABSENT
