"""Suspend and resume of the direct-QEMU backend: how the migration stream reaches the file
per platform, monitor and QEMU version (pure), and the QMP sequences of a save and a restore
against the QMP stand-in, the save file's descriptor passed for real (SCM_RIGHTS)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from io import BufferedIOBase
from pathlib import Path

import pytest

from pyd.errors import PydError, UsageError
from pyd.host.loopback import free_loopback_port
from pyd.host.process_identity import identify, write_identity
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_migrate import (
    MigrationFailed,
    MigrationTransport,
    load_state,
    migration_done,
    migration_transport,
    save_state,
    version_of,
)
from pyd.vm.backends.qemu_process import QemuProcessBackend
from pyd.vm.backends.qmp import QmpEndpoint, QmpTransport, qmp_argv, qmp_run, qmp_session
from pyd.vm.backends.qmp_tls import make_credentials
from tests.unit.polling import until
from tests.unit.qmp_standin import QmpStandIn

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="unix sockets, SCM_RIGHTS")
STREAM = b"QEVM\x00\x00\x00\x03 the guest's memory"


@pytest.mark.parametrize(
    ("platform", "monitor", "version", "expected"),
    [
        ("linux", QmpTransport.UNIX, (7, 2, 0), MigrationTransport.FD),
        ("darwin", QmpTransport.UNIX, (8, 1, 5), MigrationTransport.FD),
        ("linux", QmpTransport.UNIX, (8, 2, 0), MigrationTransport.FILE),
        ("darwin", QmpTransport.UNIX, (9, 1, 0), MigrationTransport.FILE),
        ("win32", QmpTransport.TLS, (8, 2, 0), MigrationTransport.FILE),
        ("win32", QmpTransport.TLS, (10, 0, 2), MigrationTransport.FILE),
        ("linux", QmpTransport.TLS, (9, 0, 0), MigrationTransport.FILE),
    ],
)
def test_the_stream_goes_through_a_passed_fd_before_qemu_8_2_and_to_a_file_uri_since(
    platform: str, monitor: QmpTransport, version: tuple[int, int, int], expected: object
) -> None:
    assert migration_transport(platform, monitor, version) is expected


@pytest.mark.parametrize(
    ("platform", "monitor", "where"),
    [
        ("win32", QmpTransport.TLS, "on Windows"),
        ("linux", QmpTransport.TLS, "over TLS"),
        ("darwin", QmpTransport.TLS, "over TLS"),
        ("win32", QmpTransport.UNIX, "on Windows"),  # no SCM_RIGHTS there either
    ],
)
def test_an_old_qemu_that_cannot_be_passed_a_descriptor_is_refused_with_the_version_needed(
    platform: str, monitor: QmpTransport, where: str
) -> None:
    with pytest.raises(UsageError) as e:
        migration_transport(platform, monitor, (7, 2, 22))
    said = e.value.message
    assert where in said and "QEMU 8.2.0 or newer" in said and "this QEMU is 7.2.22" in said
    assert "Nothing was changed" in said
    assert "upgrade QEMU" in (e.value.hint or "")


def test_version_of_reads_query_version() -> None:
    reply = {"return": {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "Debian"}}
    assert version_of(reply) == (7, 2, 22)
    with pytest.raises(ValueError):
        version_of({"return": {}})


def test_migration_done_says_what_qemu_said_when_it_failed() -> None:
    assert not migration_done({"return": {}})  # not started yet
    assert not migration_done({"return": {"status": "active"}})
    assert migration_done({"return": {"status": "completed"}})
    with pytest.raises(MigrationFailed, match="No space left on device"):
        migration_done({"return": {"status": "failed", "error-desc": "No space left on device"}})
    with pytest.raises(MigrationFailed, match="cancelled"):
        migration_done({"return": {"status": "cancelled"}})


class MigratingQemu(QmpStandIn):
    """QEMU's migration as its monitor shows it: `active` once, then `final`; on `migrate`
    it writes STREAM through the descriptor it was passed (the fd: transport), on
    `migrate-incoming` it reads the save through it."""

    def __init__(self, path: Path, final: dict[str, object], running: bool = True) -> None:
        super().__init__(path)
        self.final = final
        self.running = running
        self.polls = 0
        self.loaded = b""

    def reply(self, command: str, out: BufferedIOBase) -> dict[str, object]:
        if command == "query-status":
            status = "running" if self.running else "paused"
            return {"return": {"running": self.running, "status": status}}
        if command == "query-migrate":
            self.polls += 1
            return {"return": {"status": "active"} if self.polls == 1 else self.final}
        if command == "migrate" and self.fds:
            os.write(self.fds[-1], STREAM)
        if command == "migrate-incoming" and self.fds:
            self.loaded = os.read(self.fds[-1], 1000)
        return {"return": {}}


@pytest.fixture
def sock() -> Iterator[Path]:
    # AF_UNIX paths are short (104 bytes on macOS): not under pytest's tmp_path.
    d = Path(os.path.realpath("/tmp")) / f"pyd-mig-{os.getpid()}-{time.monotonic_ns()}"
    d.mkdir()
    yield d / "qmp.sock"
    shutil.rmtree(d)


def _endpoint(sock: Path) -> QmpEndpoint:
    return QmpEndpoint(QmpTransport.UNIX, sock=sock)


def _step(
    qemu: MigratingQemu, sock: Path, step: Callable[..., None], path: Path, flags: int,
    transport: MigrationTransport = MigrationTransport.FD,
) -> None:  # fmt: skip
    """`step` (save_state or load_state) on the stand-in's monitor with `path` opened with
    `flags`, as the backend does; the stand-in is closed after, whatever happened."""
    fd = os.open(path, flags, 0o600)
    try:
        with qmp_session(_endpoint(sock)) as qmp:
            step(qmp, transport, path, fd, timeout=10)
    finally:
        os.close(fd)
        qemu.close()


@posix_only
def test_a_save_stops_the_guest_and_qemu_writes_through_the_passed_file(
    sock: Path, tmp_path: Path
) -> None:
    qemu = MigratingQemu(sock, {"status": "completed"})
    save = tmp_path / "suspend.save"
    _step(qemu, sock, save_state, save, os.O_WRONLY | os.O_CREAT)
    assert qemu.commands == [
        "qmp_capabilities",
        "query-status",
        "stop",
        "migrate-set-parameters",
        "getfd",
        "migrate",
        "query-migrate",
        "query-migrate",
    ]
    assert qemu.arguments[4] == {"fdname": "pydsave"}
    assert qemu.arguments[5] == {"uri": "fd:pydsave"}
    bandwidth = qemu.arguments[3]["max-bandwidth"]
    assert isinstance(bandwidth, int) and bandwidth > 32 << 20  # QEMU's default: 32 MiB/s
    assert save.read_bytes() == STREAM  # the descriptor passed was the save file's


@posix_only
def test_a_save_to_a_file_uri_passes_no_descriptor(sock: Path, tmp_path: Path) -> None:
    qemu = MigratingQemu(sock, {"status": "completed"})
    save = tmp_path / "suspend.save"
    _step(qemu, sock, save_state, save, os.O_WRONLY | os.O_CREAT, MigrationTransport.FILE)
    assert "getfd" not in qemu.commands
    assert {"uri": f"file:{save}"} in qemu.arguments


@posix_only
@pytest.mark.parametrize(("running", "resumed"), [(True, ["cont"]), (False, [])])
def test_a_failed_save_lets_the_guest_run_on_as_it_was_and_says_qemus_error(
    sock: Path, tmp_path: Path, running: bool, resumed: list[str]
) -> None:
    qemu = MigratingQemu(
        sock, {"status": "failed", "error-desc": "No space left on device"}, running
    )
    with pytest.raises(MigrationFailed) as e:
        _step(qemu, sock, save_state, tmp_path / "s", os.O_WRONLY | os.O_CREAT)
    assert str(e.value) == "No space left on device"
    assert qemu.commands[-2:] == ["query-migrate", "migrate_cancel", *resumed][-2:]
    assert qemu.commands.count("cont") == len(resumed)


@posix_only
def test_a_restore_loads_the_passed_save_then_lets_the_guest_run(
    sock: Path, tmp_path: Path
) -> None:
    save = tmp_path / "suspend.save"
    save.write_bytes(STREAM)
    qemu = MigratingQemu(sock, {"status": "completed"}, running=False)
    _step(qemu, sock, load_state, save, os.O_RDONLY)
    assert qemu.commands == [
        "qmp_capabilities",
        "getfd",
        "migrate-incoming",
        "query-migrate",
        "query-migrate",
        "cont",
    ]
    assert qemu.arguments[2] == {"uri": "fd:pydsave"}
    assert qemu.loaded == STREAM


class ExitingQemu(MigratingQemu):
    exits_on = frozenset({"query-migrate"})  # QEMU 7.2 exits when the load fails


@posix_only
def test_a_restore_whose_qemu_exits_fails_and_never_lets_anything_run(
    sock: Path, tmp_path: Path
) -> None:
    (tmp_path / "s").write_bytes(b"truncated")
    qemu = ExitingQemu(sock, {"status": "completed"})
    with pytest.raises(MigrationFailed) as e:
        _step(qemu, sock, load_state, tmp_path / "s", os.O_RDONLY)
    assert "closed" in str(e.value)
    assert "cont" not in qemu.commands


# -- through the backend ---------------------------------------------------------------------


class QemuToSave(MigratingQemu):
    """A running QEMU (`process`) that ends at `quit`, as QEMU does."""

    def __init__(self, path: Path, final: dict[str, object], process: subprocess.Popen[bytes]):
        super().__init__(path, final)
        self.process = process

    def reply(self, command: str, out: BufferedIOBase) -> dict[str, object]:
        if command == "query-version":
            return {"return": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""}}
        return super().reply(command, out)

    def after(self, command: str) -> None:
        if command == "quit":
            self.process.kill()
            self.process.wait()


def _instance(sock: Path) -> tuple[InstanceFiles, subprocess.Popen[bytes]]:
    files = InstanceFiles(sock.parent)
    files.qemu_argv.write_text('{"argv": ["qemu-system-x86_64", "-m", "2048M"]}\n')
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    identity = identify(process.pid)
    assert identity is not None
    write_identity(files.qemu_proc, identity)
    return files, process


@posix_only
def test_suspend_saves_0600_and_ends_qemu_and_its_process_record(sock: Path) -> None:
    files, process = _instance(sock)
    qemu = QemuToSave(sock, {"status": "completed"}, process)
    save = sock.parent / "suspend.save"
    try:
        QemuProcessBackend("t", files).save(save)
    finally:
        qemu.close()
        process.kill()
        process.wait()
    assert qemu.commands[-1] == "quit" and "getfd" in qemu.commands
    assert save.read_bytes() == STREAM and stat.S_IMODE(save.stat().st_mode) == 0o600
    assert not files.qemu_proc.exists()  # QEMU ended; nothing names it any more


@posix_only
def test_a_failed_suspend_keeps_qemu_running_and_leaves_no_save(sock: Path) -> None:
    files, process = _instance(sock)
    qemu = QemuToSave(sock, {"status": "failed", "error-desc": "disk full"}, process)
    save = sock.parent / "suspend.save"
    try:
        with pytest.raises(PydError) as e:
            QemuProcessBackend("t", files).save(save)
        assert process.poll() is None and files.qemu_proc.exists()
    finally:
        qemu.close()
        process.kill()
        process.wait()
    assert "disk full" in e.value.message and "runs on" in (e.value.hint or "")
    assert "quit" not in qemu.commands and qemu.commands[-1] == "cont"
    assert not save.exists()


@posix_only
def test_a_suspend_without_the_boot_record_changes_nothing(sock: Path) -> None:
    files, process = _instance(sock)
    files.qemu_argv.unlink()
    qemu = QemuToSave(sock, {"status": "completed"}, process)
    try:
        with pytest.raises(PydError, match=r"qemu\.argv\.json is missing"):
            QemuProcessBackend("t", files).save(sock.parent / "suspend.save")
    finally:
        qemu.close()
        process.kill()
        process.wait()
    assert "stop" not in qemu.commands


@posix_only
def test_a_restore_over_the_tls_monitor_with_qemu_7_2_is_refused_before_qemu_starts(
    sock: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = InstanceFiles(sock.parent)
    qemu = sock.parent / "qemu-system-x86_64"
    started = sock.parent / "started"
    qemu.write_text(
        f'#!/bin/sh\n[ "$1" = --version ] && echo "QEMU emulator version 7.2.0" && exit 0\n'
        f"touch {started}\n"
    )
    qemu.chmod(0o700)
    files.qemu_argv.write_text(f'{{"argv": ["{qemu}", "-m", "2048M"]}}\n')
    save = files.suspend_save
    save.write_bytes(STREAM)
    monkeypatch.setenv("PYD_QMP", "tls")
    with pytest.raises(UsageError, match=r"needs QEMU 8\.2\.0 or newer"):
        QemuProcessBackend("t", files).restore(save)
    assert not started.exists() and save.read_bytes() == STREAM
    assert QemuProcessBackend("t", files).emulator_version() == "7.2.0"  # the binary's, not running


# -- a real QEMU without a machine (no CPU to emulate: a second, no VM lock needed) ----------

QEMU = "qemu-system-x86_64"
real_qemu = pytest.mark.skipif(
    sys.platform == "win32" or shutil.which(QEMU) is None, reason=f"POSIX, {QEMU}"
)


def _bare_qemu_argv(files: InstanceFiles) -> list[str]:
    qemu = shutil.which(QEMU)
    assert qemu is not None
    argv = [qemu, "-machine", "none", "-display", "none", "-nodefaults", "-no-user-config"]
    return [*argv, "-pidfile", str(files.qemu_pid)]


def _first_save(files: InstanceFiles, save: Path) -> None:
    """A save of a machine-less QEMU, made as `pyd suspend` makes one, outside the backend."""
    argv = [*_bare_qemu_argv(files), "-qmp", f"unix:{files.qmp_sock},server=on,wait=off"]
    subprocess.run([*argv, "-daemonize"], check=True, timeout=30)
    fd = os.open(save, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with qmp_session(_endpoint(files.qmp_sock), 10) as qmp:
            save_state(qmp, MigrationTransport.FD, save, fd, timeout=30)
            with contextlib.suppress(OSError):
                qmp.execute("quit")
    finally:
        os.close(fd)
    until(lambda: QemuProcessBackend("t", files).state() is VMState.STOPPED, 30, 0.05, "quit")


@real_qemu
@pytest.mark.parametrize("launch", ["daemonize", "detached"])  # detached: Windows' way
def test_a_real_qemu_resumes_suspends_and_resumes_again_through_the_backend(
    sock: Path, launch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_QEMU_LAUNCH", launch)
    files = InstanceFiles(sock.parent)
    files.os_disk.write_bytes(b"")  # an instance with disks: stopped, not absent
    files.qemu_argv.write_text(json.dumps({"argv": _bare_qemu_argv(files)}))
    backend = QemuProcessBackend("t", files)
    first, second = sock.parent / "first.save", files.suspend_save
    _first_save(files, first)
    stopped_version = backend.emulator_version()
    try:
        backend.restore(first)
        assert backend.state() is VMState.RUNNING  # `cont` after the load
        assert backend.emulator_version() == stopped_version  # QMP's, as the binary's
        backend.save(second)
        assert backend.state() is VMState.STOPPED and not files.qemu_pid.exists()
        assert stat.S_IMODE(second.stat().st_mode) == 0o600 and second.stat().st_size > 0
        assert first.exists()  # a restore leaves the file where it is
        backend.restore(second)
        assert backend.state() is VMState.RUNNING
    finally:
        backend.kill()


@real_qemu
def test_a_save_qemu_cannot_load_fails_with_qemus_words_and_leaves_no_qemu(sock: Path) -> None:
    files = InstanceFiles(sock.parent)
    files.os_disk.write_bytes(b"")
    files.qemu_argv.write_text(json.dumps({"argv": _bare_qemu_argv(files)}))
    files.suspend_save.write_bytes(b"not a migration stream\n" * 100)
    backend = QemuProcessBackend("t", files)
    try:
        with pytest.raises(PydError) as e:
            backend.restore(files.suspend_save)
    finally:
        backend.kill()
    assert "Not a migration stream" in e.value.message  # QEMU's own words, from its -D log
    assert backend.state() is VMState.STOPPED
    assert files.suspend_save.exists()


@real_qemu
def test_a_suspend_over_the_tls_monitor_of_qemu_7_2_is_refused_and_the_vm_runs_on(
    sock: Path,
) -> None:
    files = InstanceFiles(sock.parent)
    files.os_disk.write_bytes(b"")
    files.qemu_argv.write_text(json.dumps({"argv": _bare_qemu_argv(files)}))
    make_credentials(files.qmp_tls, "t")
    port = free_loopback_port()
    files.qmp_port.write_text(f"{port}\n")
    tls = QmpEndpoint(QmpTransport.TLS, port=port, tls_dir=files.qmp_tls)
    subprocess.run([*_bare_qemu_argv(files), *qmp_argv(tls), "-daemonize"], check=True, timeout=30)
    backend = QemuProcessBackend("t", files)
    try:
        if version_of(qmp_run(tls, "query-version")) >= (8, 2, 0):
            pytest.skip("this QEMU saves over TLS (file: migration)")
        with pytest.raises(UsageError) as e:
            backend.save(files.suspend_save)
        assert backend.state() is VMState.RUNNING  # not stopped, not quit
    finally:
        backend.kill()
    assert "needs QEMU 8.2.0 or newer" in e.value.message and "over TLS" in e.value.message
    assert not files.suspend_save.exists()
