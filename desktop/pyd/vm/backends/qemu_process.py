"""The direct-QEMU backend of `pyd start` (`backend = "qemu"`), for hosts without libvirt
(libvirt has no QEMU driver on Windows; optional on macOS). Same VMBackend interface as
libvirt. Two seams carry the platform: how QEMU is launched (qemu_launch.py: -daemonize and
a locked pidfile on POSIX, detached with a recorded identity on Windows) and how its monitor
is reached (qmp.py: a Unix socket on POSIX, loopback mutual TLS on Windows). A running QEMU
is judged by the files its start left (a proc record, a port file), not by the platform, so
`pyd stop` finds what `pyd start` made. (vm/throwaway_qemu.py is the test and bench
harness's QEMU, not this.)"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pyd.errors import PydError
from pyd.host.loopback import free_loopback_port
from pyd.host.private_files import FILE_MODE, write_private_text
from pyd.host.process_identity import ProcessIdentity, identify, is_running, read_identity
from pyd.host.procs import end_process, pid_alive
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_cmdline import qemu_argv
from pyd.vm.backends.qemu_launch import (
    LaunchPlan,
    LaunchStyle,
    launch_plan,
    log_tail,
    run_daemonized,
    run_detached,
)
from pyd.vm.backends.qemu_migrate import (
    MigrationFailed,
    load_state,
    migration_transport,
    save_state,
    version_of,
)
from pyd.vm.backends.qmp import (
    QmpCommandError,
    QmpEndpoint,
    QmpTransport,
    monitor_port_taken,
    qmp_argv,
    qmp_run,
    qmp_session,
    qmp_transport,
    vm_paused,
)
from pyd.vm.backends.qmp_tls import make_credentials
from pyd.vm.qemu_binary import Version, format_version, qemu_version, require_qemu_binary
from pyd.vm.spec import GuestSpec

START_TIMEOUT = 60.0  # a detached QEMU's monitor answers within a second; a loaded host is slower
MONITOR_PORT_ATTEMPTS = 3  # a port taken three times in a row is no race: QEMU's error stands
MIGRATE_TIMEOUT = 600.0  # a save or a restore of several GiB on a slow disk
MIGRATE_REPLY_TIMEOUT = 10.0  # per QMP reply while saving: a loaded host answers slowly
QUIT_TIMEOUT = 30.0  # QEMU ends within a second of `quit`; then it is killed
MIB = 1 << 20

_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation of the save
log = logging.getLogger("pyd.vm")


def require_qemu(argv: list[str]) -> list[str]:
    """`argv` with its QEMU binary found where this OS keeps it (Homebrew's prefixes on
    macOS, C:\\Program Files\\qemu on Windows, PATH) and checked to be new enough; an
    EnvironmentProblem with the install or upgrade command otherwise."""
    return [str(require_qemu_binary(argv[0])), *argv[1:]]


def pidfile_lock_held(platform: str, path: Path) -> bool:
    """Someone holds the write lock on QEMU's pidfile at `path`: QEMU takes it (POSIX
    lockf) for its whole life, so a held lock proves the pid in the file is that QEMU's.
    Never on Windows (`platform`: sys.platform's values): no such lock there, and a bare
    pid proves nothing (Windows reuses pids quickly), so a qemu.pid without pyd's recorded
    identity is not taken for QEMU."""
    if platform == "win32" or sys.platform == "win32":
        return False
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # held: QEMU is alive
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def forced_off_text(name: str, timeout: float, refused: str | None) -> str:
    """Pure: what `pyd stop` says when the guest did not power off within `timeout` and
    QEMU is killed; `refused`: why the power button was not pressed, if it was not."""
    why = f" ({refused})" if refused else " after the power button"
    return f"{name} did not power off within {timeout:g} s{why}: QEMU was killed"


class QemuProcessBackend:
    def __init__(self, instance: str, files: InstanceFiles) -> None:
        self.instance = instance
        self.name = f"pyd-{instance}"
        self.files = files

    # -- which QEMU runs -------------------------------------------------------------------

    def _running(self) -> ProcessIdentity | None:
        """The identity (pid + start time) of this instance's QEMU while it runs; the only
        thing pyd ever ends. Detached: the one its start recorded. Daemonized: the pidfile's
        pid, taken for QEMU only while QEMU's lock on the file is held, so a pidfile left
        by a crash or a host reboot (whose pid may now be any other process) does not count.
        The identity is read before the lock is tested: a QEMU that dies in between frees
        the lock, so its pid's next owner is never the one named."""
        if self.files.qemu_proc.exists():
            recorded = read_identity(self.files.qemu_proc)
            return recorded if recorded is not None and is_running(recorded) else None
        pid = self._pidfile_pid()
        identity = identify(pid) if pid is not None else None
        if identity is None or not pidfile_lock_held(sys.platform, self.files.qemu_pid):
            return None
        return identity

    def _pid(self) -> int | None:
        identity = self._running()
        return identity.pid if identity is not None else None

    def _pidfile_pid(self) -> int | None:
        try:
            return int(self.files.qemu_pid.read_text().strip())
        except (OSError, ValueError):
            return None

    def _not_ours(self) -> str | None:
        """What `kill` says when the instance's files name a live process that is not its
        QEMU (which it then leaves alone); None when they name no live process."""
        if self.files.qemu_proc.exists():
            recorded = read_identity(self.files.qemu_proc)
            if recorded is None or not pid_alive(recorded.pid):
                return None
            record, pid = self.files.qemu_proc, recorded.pid
            why = "it started at another time than the QEMU recorded: the pid was reused"
        else:
            record, maybe = self.files.qemu_pid, self._pidfile_pid()
            if maybe is None or not pid_alive(maybe):
                return None
            pid = maybe
            why = (
                "pyd recorded no start time for it, and it holds no lock on the pidfile "
                "as QEMU does on Linux and macOS"
            )
        return f"{record} names pid {pid}, not this VM's QEMU ({why}): that process is left running"

    def _endpoint(self) -> QmpEndpoint:
        """The monitor of the QEMU that runs: TLS when its start left a port file."""
        try:
            port = int(self.files.qmp_port.read_text().strip())
        except (OSError, ValueError):
            return QmpEndpoint(QmpTransport.UNIX, sock=self.files.qmp_sock)
        return QmpEndpoint(QmpTransport.TLS, port=port, tls_dir=self.files.qmp_tls)

    def state(self) -> VMState:
        if self._pid() is not None:
            return VMState.PAUSED if self._paused() else VMState.RUNNING
        return VMState.STOPPED if self.files.os_disk.exists() else VMState.ABSENT

    def _paused(self) -> bool:
        """Stopped by QMP `stop` (or a debugger): QEMU lives but the guest does not run.
        A monitor that does not answer says nothing: the VM counts as running."""
        try:
            reply = self._qmp("query-status")
        except (OSError, ValueError):
            return False
        return vm_paused(reply)

    def resume(self) -> None:
        if self._pid() is not None and self._paused():
            try:
                self._qmp("cont")
            except (OSError, ValueError) as e:
                raise PydError(
                    f"cannot resume {self.name} through QEMU's monitor: {e}",
                    hint=f"the monitor is {self._endpoint_text()}",
                ) from None

    # -- start and stop ---------------------------------------------------------------------

    def start(self, spec: GuestSpec) -> None:
        argv = require_qemu(qemu_argv(spec))
        # A restore starts QEMU with this very command line (a save loads only into the
        # machine it came from), whatever the config says by then.
        write_private_text(self.files.qemu_argv, json.dumps({"argv": argv}) + "\n")
        self._boot(argv)

    def _boot(self, argv: list[str]) -> QmpEndpoint:
        """Launches QEMU with `argv` and a fresh monitor; the monitor's endpoint."""
        plan = launch_plan(sys.platform, os.environ)
        transport = qmp_transport(sys.platform, os.environ)
        for attempt in range(1, MONITOR_PORT_ATTEMPTS + 1):
            endpoint = self._new_endpoint(transport)
            try:
                self._launch(argv + qmp_argv(endpoint), plan, endpoint)
            except PydError as e:
                # The TLS monitor's port is chosen here and bound by QEMU a moment later:
                # another process may take it in between. QEMU then exits at once, so
                # another try with a fresh port costs little.
                if attempt < MONITOR_PORT_ATTEMPTS and monitor_port_taken(e.message, endpoint):
                    log.info("QMP port %d was taken before QEMU bound it; retrying", endpoint.port)
                    continue
                raise
            return endpoint
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _launch(self, argv: list[str], plan: LaunchPlan, endpoint: QmpEndpoint) -> None:
        if plan.style is LaunchStyle.DAEMONIZE:
            # -daemonize returns once QEMU has opened its disks and ports: errors come back here.
            run_daemonized(argv, plan, hint=f"see {self.files.serial_log}")
        else:
            run_detached(
                argv,
                plan,
                log=self.files.qemu_log,
                record=self.files.qemu_proc,
                ready=lambda: self._answers(endpoint),
                timeout=START_TIMEOUT,
            )
        if endpoint.transport is QmpTransport.UNIX:
            with contextlib.suppress(OSError):  # -daemonize's own umask (027) made it 0750
                os.chmod(self.files.qmp_sock, FILE_MODE)

    def _new_endpoint(self, transport: QmpTransport) -> QmpEndpoint:
        """A fresh monitor endpoint for the QEMU about to start; the other transport's
        files go, so the files say which one runs."""
        self._remove_monitor_files()
        self.files.qemu_proc.unlink(missing_ok=True)
        if transport is QmpTransport.UNIX:
            return QmpEndpoint(QmpTransport.UNIX, sock=self.files.qmp_sock)
        make_credentials(self.files.qmp_tls, self.instance)
        port = free_loopback_port()
        write_private_text(self.files.qmp_port, f"{port}\n")
        return QmpEndpoint(QmpTransport.TLS, port=port, tls_dir=self.files.qmp_tls)

    def _answers(self, endpoint: QmpEndpoint) -> bool:
        try:
            qmp_run(endpoint, "query-status")
        except (OSError, ValueError):
            return False
        return True

    def shutdown(self, timeout: float) -> None:
        identity = self._running()
        if identity is None:
            return
        refused = self._press_power_button()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_running(identity):
                self._forget_process()
                return
            time.sleep(0.2)
        log.warning(forced_off_text(self.name, timeout, refused))
        self.kill()

    def _press_power_button(self) -> str | None:
        """ACPI's power button through QMP, the guest resumed first when paused (a paused
        guest sees no button). None when pressed; else what QEMU or its monitor answered."""
        try:
            if vm_paused(self._qmp("query-status")):
                self._qmp("cont")
            self._qmp("system_powerdown")
        except QmpCommandError as e:
            return f"QEMU answered {e.command} with {e.error_class}: {e.desc}"
        except (OSError, ValueError) as e:
            return f"its monitor ({self._endpoint_text()}) did not take the button: {e}"
        return None

    def kill(self) -> None:
        identity = self._running()
        if identity is not None:
            end_process(identity, timeout=5)  # TerminateProcess on Windows
        else:
            stranger = self._not_ours()
            if stranger is not None:
                log.warning("%s: %s", self.name, stranger)
        self._forget_process()

    def _forget_process(self) -> None:
        self.files.qemu_pid.unlink(missing_ok=True)
        self.files.qemu_proc.unlink(missing_ok=True)

    def delete(self) -> None:
        self.files.qemu_argv.unlink(missing_ok=True)
        self.files.qemu_pid.unlink(missing_ok=True)
        self.files.qemu_proc.unlink(missing_ok=True)
        self.files.qemu_log.unlink(missing_ok=True)
        self._remove_monitor_files()

    def _remove_monitor_files(self) -> None:
        self.files.qmp_sock.unlink(missing_ok=True)
        self.files.qmp_port.unlink(missing_ok=True)
        shutil.rmtree(self.files.qmp_tls, ignore_errors=True)

    # -- SuspendableBackend (qemu_migrate.py) ----------------------------------------------

    def emulator_version(self) -> str:
        """The running QEMU's version (QMP), else its binary's (--version): one string."""
        return format_version(self._version())

    def _version(self) -> Version:
        if self._pid() is not None:
            try:
                return version_of(self._qmp("query-version"))
            except (OSError, ValueError) as e:
                raise PydError(
                    f"cannot read QEMU's version through its monitor: {e}",
                    hint=f"the monitor is {self._endpoint_text()}",
                ) from None
        return qemu_version(Path(self._booted_argv()[0]))

    def _booted_argv(self) -> list[str]:
        """The command line this instance's QEMU last booted with (start() records it)."""
        try:
            argv = json.loads(self.files.qemu_argv.read_text(encoding="utf-8"))["argv"]
        except (OSError, ValueError, KeyError, TypeError):
            argv = None
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise PydError(
                f"{self.files.qemu_argv} is missing or unreadable: pyd cannot tell how "
                f"{self.name} booted, so it cannot save or restore it",
                hint="`pyd restart` boots it afresh and records it",
            )
        return argv

    def shape(self) -> tuple[int, int]:
        try:
            cpus = self._qmp("query-cpus-fast")["return"]
            memory = self._qmp("query-memory-size-summary")["return"]["base-memory"]
            return len(cpus), int(memory) // MIB
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise PydError(
                f"cannot read {self.name}'s CPUs and memory through its monitor: {e}",
                hint=f"the monitor is {self._endpoint_text()}",
            ) from None

    def save(self, path: Path) -> None:
        identity = self._running()
        if identity is None:
            raise PydError(f"{self.name} is not running: there is nothing to save")
        self._booted_argv()  # a restore needs it: refuse while nothing has changed
        endpoint = self._endpoint()
        transport = migration_transport(sys.platform, endpoint.transport, self._version())
        # Created 0600 (owner-only on Windows) before QEMU writes a byte into it.
        write_private_text(path, "")
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | _BINARY)
        try:
            with qmp_session(endpoint, MIGRATE_REPLY_TIMEOUT) as qmp:
                save_state(qmp, transport, path, fd, MIGRATE_TIMEOUT)
                with contextlib.suppress(OSError):  # QEMU may close before its reply
                    qmp.execute("quit")
        except (MigrationFailed, OSError) as e:
            path.unlink(missing_ok=True)
            raise PydError(
                f"cannot save {self.name} to {path}: {e}",
                hint="the VM runs on as it was; `pyd stop` powers it off",
            ) from None
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.chmod(path, FILE_MODE)  # the file: transport's QEMU opened it itself
        self._wait_gone(identity, QUIT_TIMEOUT)

    def _wait_gone(self, identity: ProcessIdentity, timeout: float) -> None:
        """Waits for QEMU to end after `quit`; killed after `timeout` (its state is saved)."""
        deadline = time.monotonic() + timeout
        while is_running(identity) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_running(identity):
            log.warning("%s did not end within %g s of quit: QEMU was killed", self.name, timeout)
            end_process(identity, timeout=5)
        self._forget_process()

    def restore(self, path: Path) -> None:
        if self._pid() is not None:
            raise PydError(f"{self.name} is already running")
        argv = self._booted_argv()
        monitor = qmp_transport(sys.platform, os.environ)
        transport = migration_transport(sys.platform, monitor, qemu_version(Path(argv[0])))
        # A daemonized QEMU's stderr is /dev/null: -D keeps its words (why a load failed).
        # Detached, its output goes to that log already.
        plan = launch_plan(sys.platform, os.environ)
        log_option = ["-D", str(self.files.qemu_log)] if plan.style is LaunchStyle.DAEMONIZE else []
        self.files.qemu_log.unlink(missing_ok=True)
        fd = os.open(path, os.O_RDONLY | _BINARY)
        try:
            try:
                endpoint = self._boot([*argv, *log_option, "-incoming", "defer"])
            except PydError as e:
                if not log_option:
                    raise  # detached: its log's tail is in the message already
                raise PydError(f"{e.message} {self._qemu_said()}".strip(), hint=e.hint) from None
            try:
                with qmp_session(endpoint, MIGRATE_REPLY_TIMEOUT) as qmp:
                    load_state(qmp, transport, path, fd, MIGRATE_TIMEOUT)
            except (MigrationFailed, OSError) as e:
                # QEMU 7.2 exits by itself when the load fails; a later one may wait.
                self.kill()
                raise PydError(
                    f"{self.name} did not restore from {path}: {e} {self._qemu_said()}".strip(),
                    hint=f"see {self.files.qemu_log}",
                ) from None
        finally:
            os.close(fd)

    def _qemu_said(self) -> str:
        said = " ".join(log_tail(self.files.qemu_log, 400).split())
        return f"(QEMU said: {said})" if said else ""

    def _qmp(self, command: str) -> dict[str, Any]:
        """Runs one QMP command; its reply. The monitor takes one client at a time, so a
        short timeout: a probe must not hang behind another."""
        return qmp_run(self._endpoint(), command)

    def _endpoint_text(self) -> str:
        endpoint = self._endpoint()
        if endpoint.transport is QmpTransport.TLS:
            return f"127.0.0.1:{endpoint.port} (TLS, credentials in {endpoint.tls_dir})"
        return str(endpoint.sock)
