"""The direct-QEMU backend's idea of "running": QEMU's locked pidfile (daemonized) or its
recorded pid + start time (detached), never a bare pid (on Windows not even a pidfile); a
process the files name that is not QEMU is never ended, and `kill` says so; the power
button through the monitor, what QEMU answered to it and the forced end after the timeout;
and a start whose TLS monitor port is taken before QEMU binds it (a real QEMU without a
machine)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from io import BufferedIOBase
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.config.machine import Accel
from pyd.errors import PydError
from pyd.host.loopback import free_loopback_port
from pyd.host.process_identity import ProcessIdentity, identify, write_identity
from pyd.host.procs import pid_alive
from pyd.instance.files import InstanceFiles
from pyd.vm.backends import qemu_process
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_process import QemuProcessBackend, forced_off_text, pidfile_lock_held
from pyd.vm.backends.qmp import vm_paused
from pyd.vm.spec import GuestSpec
from tests.unit.polling import until
from tests.unit.qmp_standin import QmpStandIn

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


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_stale_pidfile_naming_a_live_process_is_not_a_running_vm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = InstanceFiles(tmp_path)
    files.os_disk.write_bytes(b"")
    files.qemu_pid.write_text(f"{os.getpid()}\n")  # alive, but not QEMU and not locked
    backend = QemuProcessBackend("t", files)
    assert backend.state() is VMState.STOPPED
    backend.kill()  # must not signal the process the stale file names
    assert pid_alive(os.getpid())
    assert _warnings(caplog) == [
        f"pyd-t: {files.qemu_pid} names pid {os.getpid()}, not this VM's QEMU (pyd recorded "
        "no start time for it, and it holds no lock on the pidfile as QEMU does on Linux and "
        "macOS): that process is left running"
    ]
    assert not files.qemu_pid.exists()
    backend.kill()  # the stale file is gone: nothing more to say
    assert len(_warnings(caplog)) == 1


def test_a_pidfile_naming_no_live_process_is_forgotten_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = InstanceFiles(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    files.qemu_pid.write_text(f"{dead.pid}\n")
    QemuProcessBackend("t", files).kill()
    assert _warnings(caplog) == [] and not files.qemu_pid.exists()


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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks")
@pytest.mark.parametrize(("platform", "proof"), [("linux", True), ("darwin", True),
                                                 ("win32", False)])  # fmt: skip
def test_only_posix_takes_a_held_pidfile_lock_for_qemu(
    tmp_path: Path, platform: str, proof: bool
) -> None:
    """Windows has no pidfile lock (and pyd never daemonizes QEMU there): a qemu.pid alone
    is never proof there, even when something does hold a lock on it."""
    files = InstanceFiles(tmp_path)
    assert pidfile_lock_held(platform, files.qemu_pid) is False  # no file
    with _qemu(files):
        assert pidfile_lock_held(platform, files.qemu_pid) is proof
    assert pidfile_lock_held(platform, files.qemu_pid) is False  # the holder is gone


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks")
def test_a_bare_pidfile_is_not_qemu_where_no_lock_proves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend as on Windows: a live process in a (locked) qemu.pid, no recorded
    identity. It is not a running VM, and neither kill nor shutdown ends it."""
    monkeypatch.setattr(
        qemu_process, "pidfile_lock_held", lambda _platform, path: pidfile_lock_held("win32", path)
    )
    files = InstanceFiles(tmp_path)
    files.os_disk.write_bytes(b"")
    with _qemu(files) as holder:
        backend = QemuProcessBackend("t", files)
        assert backend.state() is VMState.STOPPED
        backend.shutdown(timeout=0.1)
        backend.kill()
        assert holder.poll() is None, "a process without a recorded identity was ended"
        assert f"names pid {holder.pid}, not this VM's QEMU" in " ".join(_warnings(caplog))
        assert not files.qemu_pid.exists()


def test_a_locked_pidfile_is_running_and_kill_ends_it(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    with _qemu(files) as holder:
        backend = QemuProcessBackend("t", files)
        assert backend.state() is VMState.RUNNING
        backend.kill()
        until(lambda: holder.poll() is not None, 10, 0.05, "QEMU ends")
        assert not files.qemu_pid.exists()
        assert backend.state() is VMState.ABSENT


def test_a_vm_that_does_not_power_off_in_time_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`pyd stop`'s timeout: the button is pressed (here there is no monitor to press it
    through), then after `timeout` the process is ended, and pyd says so and why."""
    files = InstanceFiles(tmp_path)
    with _qemu(files) as holder:
        backend = QemuProcessBackend("t", files)
        t0 = time.monotonic()
        backend.shutdown(timeout=0.5)
        assert time.monotonic() - t0 >= 0.5  # it had its time to shut down cleanly
        until(lambda: holder.poll() is not None, 10, 0.05, "QEMU ends")
        assert backend.state() is VMState.ABSENT
    [said] = _warnings(caplog)
    assert said.startswith(f"pyd-t did not power off within 0.5 s (its monitor ({files.qmp_sock})")
    assert said.endswith("): QEMU was killed")


def test_what_a_forced_power_off_says() -> None:
    assert forced_off_text("pyd-a", 60.0, None) == (
        "pyd-a did not power off within 60 s after the power button: QEMU was killed"
    )
    assert forced_off_text("pyd-a", 2.5, "QEMU answered system_powerdown with X: y") == (
        "pyd-a did not power off within 2.5 s (QEMU answered system_powerdown with X: y): "
        "QEMU was killed"
    )


# -- the power button through QEMU's monitor (a stand-in on the instance's socket) -----------


class ScriptedMonitor(QmpStandIn):
    """QEMU's monitor: per command the error in `refuse` (QEMU's class, desc) or a success,
    after which `then[command]()` runs."""

    def __init__(
        self,
        path: Path,
        refuse: dict[str, tuple[str, str]],
        then: dict[str, Callable[[], None]],
        paused: bool = False,
    ) -> None:
        self.refuse, self.then, self.paused = refuse, then, paused
        super().__init__(path)

    def reply(self, command: str, out: BufferedIOBase) -> dict[str, object]:
        if command in self.refuse:
            error_class, desc = self.refuse[command]
            return {"error": {"class": error_class, "desc": desc}}
        if command == "query-status":
            status = "paused" if self.paused else "running"
            return {"return": {"status": status, "running": not self.paused}}
        return {"return": {}}

    def after(self, command: str) -> None:
        if command not in self.refuse and command in self.then:
            self.then[command]()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """Unix socket paths are short (108 bytes): a directory of its own directly in /tmp."""
    with tempfile.TemporaryDirectory(prefix="pyd-u", dir="/tmp") as d:
        yield Path(d)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks and unix sockets")
def test_a_guest_that_powers_off_leaves_no_process_record(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = InstanceFiles(short_dir)
    with _qemu(files) as holder:
        monitor = ScriptedMonitor(
            files.qmp_sock, refuse={}, then={"system_powerdown": holder.terminate}, paused=True
        )
        try:
            t0 = time.monotonic()
            QemuProcessBackend("t", files).shutdown(timeout=30)
            assert time.monotonic() - t0 < 10
        finally:
            monitor.sock.close()
        assert holder.poll() is not None
    commands = [c for c in monitor.commands if c != "qmp_capabilities"]  # one per connection
    assert commands == ["query-status", "cont", "system_powerdown"]
    assert not files.qemu_pid.exists()  # (this stand-in, unlike QEMU, leaves it behind)
    assert _warnings(caplog) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks and unix sockets")
@pytest.mark.parametrize("refused", ["cont", "system_powerdown"])
def test_a_power_button_qemu_refuses_is_reported_with_qemus_words(
    short_dir: Path, caplog: pytest.LogCaptureFixture, refused: str
) -> None:
    files = InstanceFiles(short_dir)
    with _qemu(files) as holder:
        monitor = ScriptedMonitor(
            files.qmp_sock,
            refuse={refused: ("GenericError", "Resetting the Virtual Machine is required")},
            then={"system_powerdown": holder.terminate},
            paused=True,
        )
        try:
            QemuProcessBackend("t", files).shutdown(timeout=0.3)
        finally:
            monitor.sock.close()
        until(lambda: holder.poll() is not None, 10, 0.05, "QEMU ends")
    assert _warnings(caplog) == [
        f"pyd-t did not power off within 0.3 s (QEMU answered {refused} with GenericError: "
        "Resetting the Virtual Machine is required): QEMU was killed"
    ]
    assert not files.qemu_pid.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks and unix sockets")
def test_a_resume_qemu_refuses_fails_with_qemus_words(short_dir: Path) -> None:
    files = InstanceFiles(short_dir)
    with _qemu(files):
        monitor = ScriptedMonitor(
            files.qmp_sock,
            refuse={"cont": ("GenericError", "migration is in progress")},
            then={},
            paused=True,
        )
        try:
            with pytest.raises(PydError, match="QEMU refused cont: migration is in progress"):
                QemuProcessBackend("t", files).resume()
        finally:
            monitor.sock.close()


# -- QEMU started detached (Windows): its recorded identity, not a pidfile -------------------


def test_a_recorded_identity_whose_pid_now_names_another_process_is_not_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = InstanceFiles(tmp_path)
    files.os_disk.write_bytes(b"")
    me = identify(os.getpid())
    assert me is not None
    write_identity(files.qemu_proc, ProcessIdentity(me.pid, me.started - 3600))  # a reused pid
    backend = QemuProcessBackend("t", files)
    assert backend.state() is VMState.STOPPED
    backend.shutdown(timeout=0.1)
    backend.kill()  # must not end the process that got the pid
    assert pid_alive(os.getpid())
    assert _warnings(caplog) == [
        f"pyd-t: {files.qemu_proc} names pid {me.pid}, not this VM's QEMU (it started at "
        "another time than the QEMU recorded: the pid was reused): that process is left running"
    ]
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
        accel=Accel.TCG,
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
