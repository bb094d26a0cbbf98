"""A guest run by QEMU as a child process, for vm/throwaway.py's harness (`pyd image
boot-check`, the e2e tests, bench/). Not how `pyd start` runs QEMU: that is the direct-QEMU
backend, vm/backends/qemu_process.py."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass

import paramiko

from pyd.errors import PydError
from pyd.host.private_files import QEMU_UMASK
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.ssh.connect import SSHTarget, ssh_while_booting
from pyd.ssh.link_errors import LINK_ERRORS
from pyd.vm.backends.qemu_cmdline import qemu_argv
from pyd.vm.backends.qemu_process import require_qemu
from pyd.vm.spec import GuestSpec


@dataclass
class DirectVM:
    spec: GuestSpec
    files: InstanceFiles
    process: subprocess.Popen[bytes]
    started: float

    @classmethod
    def launch(cls, spec: GuestSpec, files: InstanceFiles) -> DirectVM:
        argv = require_qemu(qemu_argv(spec))
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            umask=QEMU_UMASK if sys.platform != "win32" else -1,  # serial log: 0600
        )
        return cls(spec, files, proc, started)

    def ssh_target(self) -> SSHTarget:
        _client, host = instance_keys(self.files)
        return SSHTarget(
            "127.0.0.1", self.spec.ssh_port, "root", self.files.client_key, host.public_openssh
        )

    def connect(self, timeout: float) -> paramiko.SSHClient:
        """SSH to the guest once it answers; fails at once if QEMU exits meanwhile."""
        return ssh_while_booting(self.ssh_target(), timeout, self._raise_if_exited)

    def _raise_if_exited(self) -> None:
        if self.process.poll() is not None:
            err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise PydError(
                f"QEMU exited with {self.process.returncode}: {err.strip()}",
                hint=f"see {self.files.serial_log}",
            )

    def poweroff(self, client: paramiko.SSHClient | None, timeout: float = 60) -> None:
        """Clean shutdown through the guest's init, forced after `timeout`."""
        if client is not None:
            with contextlib.suppress(*LINK_ERRORS):
                client.exec_command("busybox poweroff")
            client.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
