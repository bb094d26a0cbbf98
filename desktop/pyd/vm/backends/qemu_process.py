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
from pyd.host.process_identity import ProcessIdentity, is_running, read_identity
from pyd.host.procs import end_process, pid_alive, terminate
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_cmdline import qemu_argv
from pyd.vm.backends.qemu_launch import (
    LaunchPlan,
    LaunchStyle,
    launch_plan,
    run_daemonized,
    run_detached,
)
from pyd.vm.backends.qmp import (
    QmpEndpoint,
    QmpTransport,
    monitor_port_taken,
    qmp_argv,
    qmp_run,
    qmp_transport,
    vm_paused,
)
from pyd.vm.backends.qmp_tls import make_credentials
from pyd.vm.qemu_binary import require_qemu_binary
from pyd.vm.spec import GuestSpec

START_TIMEOUT = 60.0  # a detached QEMU's monitor answers within a second; a loaded host is slower
MONITOR_PORT_ATTEMPTS = 3  # a port taken three times in a row is no race: QEMU's error stands

log = logging.getLogger("pyd.vm")


def require_qemu(argv: list[str]) -> list[str]:
    """`argv` with its QEMU binary found where this OS keeps it (Homebrew's prefixes on
    macOS, C:\\Program Files\\qemu on Windows, PATH) and checked to be new enough; an
    EnvironmentProblem with the install or upgrade command otherwise."""
    return [str(require_qemu_binary(argv[0])), *argv[1:]]


def _pidfile_locked(path: Path) -> bool:
    if sys.platform == "win32":
        return True  # QEMU's pidfile lock is POSIX-only; the pid check stands alone
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


class QemuProcessBackend:
    def __init__(self, instance: str, files: InstanceFiles) -> None:
        self.instance = instance
        self.name = f"pyd-{instance}"
        self.files = files

    # -- which QEMU runs -------------------------------------------------------------------

    def _identity(self) -> ProcessIdentity | None:
        """A detached QEMU's recorded identity while that very process runs."""
        identity = read_identity(self.files.qemu_proc)
        return identity if identity is not None and is_running(identity) else None

    def _pid(self) -> int | None:
        """QEMU's pid while it runs. Detached: the recorded pid + start time. Daemonized: QEMU
        holds a write lock on its pidfile for its whole life, so a pidfile left by a crash or
        a host reboot (whose pid may now be any other process) does not count."""
        if self.files.qemu_proc.exists():
            identity = self._identity()
            return identity.pid if identity is not None else None
        try:
            pid = int(self.files.qemu_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid) or not _pidfile_locked(self.files.qemu_pid):
            return None
        return pid

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
        plan = launch_plan(sys.platform, os.environ)
        transport = qmp_transport(sys.platform, os.environ)
        argv = require_qemu(qemu_argv(spec))
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
            return

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
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if vm_paused(self._qmp("query-status")):
                self._qmp("cont")  # a paused guest would not see the power button
            self._qmp("system_powerdown")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid() != pid:
                return
            time.sleep(0.2)
        self.kill()

    def kill(self) -> None:
        if self.files.qemu_proc.exists():
            identity = self._identity()
            if identity is not None:
                end_process(identity, timeout=5)  # TerminateProcess on Windows
        else:
            pid = self._pid()
            if pid is not None:
                terminate(pid, timeout=5)
        self.files.qemu_pid.unlink(missing_ok=True)
        self.files.qemu_proc.unlink(missing_ok=True)

    def delete(self) -> None:
        self.files.qemu_pid.unlink(missing_ok=True)
        self.files.qemu_proc.unlink(missing_ok=True)
        self.files.qemu_log.unlink(missing_ok=True)
        self._remove_monitor_files()

    def _remove_monitor_files(self) -> None:
        self.files.qmp_sock.unlink(missing_ok=True)
        self.files.qmp_port.unlink(missing_ok=True)
        shutil.rmtree(self.files.qmp_tls, ignore_errors=True)

    def _qmp(self, command: str) -> dict[str, Any]:
        """Runs one QMP command; its reply. The monitor takes one client at a time, so a
        short timeout: a probe must not hang behind another."""
        return qmp_run(self._endpoint(), command)

    def _endpoint_text(self) -> str:
        endpoint = self._endpoint()
        if endpoint.transport is QmpTransport.TLS:
            return f"127.0.0.1:{endpoint.port} (TLS, credentials in {endpoint.tls_dir})"
        return str(endpoint.sock)
