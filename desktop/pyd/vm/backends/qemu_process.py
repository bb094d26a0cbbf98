"""The direct-QEMU backend of `pyd start` (`backend = "qemu"`): QEMU as a daemon with a
pidfile and a QMP socket, for hosts without libvirt (libvirt has no QEMU driver on Windows;
optional on macOS). Same VMBackend interface as libvirt. (vm/throwaway_qemu.py is the test
and bench harness's QEMU, not this.)"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyd.errors import EnvironmentProblem, PydError
from pyd.host.private_files import FILE_MODE, QEMU_UMASK
from pyd.host.procs import pid_alive, terminate
from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.qemu_cmdline import qemu_argv
from pyd.vm.spec import GuestSpec

# The Debian package holding each QEMU system emulator.
DEBIAN_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
}


def require_qemu(argv: list[str]) -> list[str]:
    """`argv` as is, when its QEMU binary is installed."""
    if not shutil.which(argv[0]):
        package = DEBIAN_PACKAGES.get(argv[0], "qemu-system")
        raise EnvironmentProblem(
            f"{argv[0]} is not installed",
            hint=f"install QEMU (Debian: apt-get install {package}; macOS: brew install qemu)",
        )
    return argv


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
        self.name = f"pyd-{instance}"
        self.files = files

    def _pid(self) -> int | None:
        """QEMU's pid while it runs. QEMU holds a write lock on its pidfile for its whole
        life, so a pidfile left by a crash or a host reboot (whose pid may now be any other
        process) does not count."""
        try:
            pid = int(self.files.qemu_pid.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid) or not _pidfile_locked(self.files.qemu_pid):
            return None
        return pid

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
                    hint=f"the monitor socket is {self.files.qmp_sock}",
                ) from None

    def start(self, spec: GuestSpec) -> None:
        argv = require_qemu(qemu_argv(spec))
        self.files.qmp_sock.unlink(missing_ok=True)
        argv += ["-qmp", f"unix:{self.files.qmp_sock},server=on,wait=off", "-daemonize"]
        # -daemonize returns once QEMU has opened its disks and ports: errors come back here.
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            umask=QEMU_UMASK if sys.platform != "win32" else -1,  # serial log, pidfile: 0600
        )
        if done.returncode != 0:
            raise PydError(
                f"QEMU failed to start: {done.stderr.decode(errors='replace').strip()}",
                hint=f"see {self.files.serial_log}",
            )
        with contextlib.suppress(OSError):  # -daemonize's own umask (027) made it 0750
            os.chmod(self.files.qmp_sock, FILE_MODE)

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
            if not pid_alive(pid):
                return
            time.sleep(0.2)
        self.kill()

    def kill(self) -> None:
        pid = self._pid()
        if pid is not None:
            terminate(pid, timeout=5)
        self.files.qemu_pid.unlink(missing_ok=True)

    def delete(self) -> None:
        self.files.qemu_pid.unlink(missing_ok=True)
        self.files.qmp_sock.unlink(missing_ok=True)

    def _qmp(self, command: str) -> dict[str, Any]:
        """Runs one QMP command; its reply. The monitor takes one client at a time, so a
        short timeout: a probe must not hang behind another."""
        if sys.platform == "win32":
            raise OSError("QEMU's monitor is a unix socket: not on Windows")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(self.files.qmp_sock))
            f = s.makefile("rwb")
            f.readline()  # greeting
            reply: dict[str, Any] = {}
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                reply = _qmp_reply(f.readline)
            return reply


def _qmp_reply(readline: Callable[[], bytes]) -> dict[str, Any]:
    """The next reply on a QMP stream, past the asynchronous events QEMU sends meanwhile."""
    while True:
        line = readline()
        if not line:
            raise ValueError("QEMU's monitor closed the connection")
        message = json.loads(line)
        if isinstance(message, dict) and ("return" in message or "error" in message):
            return message


def vm_paused(reply: Mapping[str, Any]) -> bool:
    """Pure: a `query-status` reply says the guest is paused (QMP `stop`, or `virsh
    suspend`'s equivalent), as opposed to running or on its way down."""
    status = reply.get("return")
    return (
        isinstance(status, dict)
        and not status.get("running", True)
        and (status.get("status") == "paused")
    )
