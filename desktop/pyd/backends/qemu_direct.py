"""Runs a guest with QEMU directly (no libvirt): Windows hosts, image tests and benchmarks."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass

import paramiko

from pyd.backends.guest_spec import guest_spec as guest_spec
from pyd.backends.qemu_cmdline import GuestSpec, qemu_argv
from pyd.errors import EnvironmentProblem, PydError
from pyd.instance_files import InstanceFiles
from pyd.provision import instance_keys
from pyd.ssh.connect import HostKeyMismatchError, SSHTarget, wait_for_ssh


@dataclass
class DirectVM:
    spec: GuestSpec
    files: InstanceFiles
    process: subprocess.Popen[bytes]
    started: float

    @classmethod
    def launch(cls, spec: GuestSpec, files: InstanceFiles) -> DirectVM:
        argv = qemu_argv(spec)
        if not shutil.which(argv[0]):
            raise EnvironmentProblem(
                f"{argv[0]} is not installed",
                hint="install QEMU (Debian: apt-get install qemu-system-x86; "
                "macOS: brew install qemu)",
            )
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return cls(spec, files, proc, started)

    def ssh_target(self) -> SSHTarget:
        _client, host = instance_keys(self.files)
        return SSHTarget(
            "127.0.0.1", self.spec.ssh_port, "root", self.files.client_key, host.public_openssh
        )

    def connect(self, timeout: float) -> paramiko.SSHClient:
        """SSH to the guest once it answers; fails at once if QEMU exits meanwhile."""
        deadline = time.monotonic() + timeout
        target = self.ssh_target()
        while True:
            self._raise_if_exited()
            try:
                return wait_for_ssh(target, min(deadline, time.monotonic() + 2))
            except HostKeyMismatchError:
                raise
            except PydError:
                if time.monotonic() >= deadline:
                    self._raise_if_exited()
                    raise

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
            with contextlib.suppress(paramiko.SSHException, OSError):
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
