"""The direct-QEMU backend for `pyd start`: QEMU as a daemon with a pidfile and a QMP
socket, for hosts without libvirt (libvirt has no QEMU driver on Windows; optional on
macOS). Same VMBackend interface as libvirt."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pyd.backends.base import VMState
from pyd.backends.qemu_cmdline import GuestSpec, qemu_argv
from pyd.errors import EnvironmentProblem, PydError
from pyd.instance_files import InstanceFiles
from pyd.procs import pid_alive, terminate


def require_qemu(argv: list[str]) -> list[str]:
    """`argv` as is, when its QEMU binary is installed."""
    if not shutil.which(argv[0]):
        raise EnvironmentProblem(
            f"{argv[0]} is not installed",
            hint="install QEMU (Debian: apt-get install qemu-system-x86; macOS: brew install qemu)",
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
            return VMState.RUNNING
        return VMState.STOPPED if self.files.os_disk.exists() else VMState.ABSENT

    def start(self, spec: GuestSpec) -> None:
        argv = require_qemu(qemu_argv(spec))
        self.files.qmp_sock.unlink(missing_ok=True)
        argv += ["-qmp", f"unix:{self.files.qmp_sock},server=on,wait=off", "-daemonize"]
        # -daemonize returns once QEMU has opened its disks and ports: errors come back here.
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if done.returncode != 0:
            raise PydError(
                f"QEMU failed to start: {done.stderr.decode(errors='replace').strip()}",
                hint=f"see {self.files.serial_log}",
            )

    def shutdown(self, timeout: float) -> None:
        pid = self._pid()
        if pid is None:
            return
        with contextlib.suppress(OSError, ValueError):
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

    def _qmp(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.files.qmp_sock))
            f = s.makefile("rwb")
            f.readline()  # greeting
            for cmd in ("qmp_capabilities", command):
                f.write(json.dumps({"execute": cmd}).encode() + b"\n")
                f.flush()
                f.readline()
