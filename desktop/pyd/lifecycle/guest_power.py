"""Asking a running guest to power itself off over SSH, before any power button.

An arm64 `virt` guest boots without firmware, so it has no ACPI and no power button the
cloud kernel knows (no gpio-keys): the backend's shutdown would wait its whole timeout and
then pull the plug. Over SSH every guest, of either architecture, is told the same thing:
busybox init's poweroff, which runs the ::shutdown script (dockerd stops its containers,
the data disk is released) before the kernel powers the machine off.
"""

from __future__ import annotations

from typing import Protocol

from pyd.errors import PydError
from pyd.instance.files import InstanceFiles
from pyd.instance.state import load_state

# Short: a guest that does not answer at once (hung, still booting, no sshd) gets the
# backend's button as before, and a few seconds at most are lost on it.
CONNECT_TIMEOUT = 2.0  # the TCP connect to QEMU's port forward
HANDSHAKE_TIMEOUT = 8.0  # banner, key exchange and login: slowest under emulation
COMMAND_TIMEOUT = 5.0  # `poweroff` only signals init and returns
# The guest's ::shutdown script powers off by itself once Docker is stopped and the disks are
# read-only when it finds this, instead of leaving it to init (two fixed 1 s sleeps). Without
# it (a guest `reboot`, an image from before), init goes on as it always did.
POWEROFF_REQUEST = "/run/pyd/poweroff"
# Through init (not `poweroff -f`): SIGUSR2 to pid 1, which runs ::shutdown first.
POWEROFF = f": > {POWEROFF_REQUEST}; /usr/bin/busybox poweroff"
GUEST_USER = "root"


class GuestPower(Protocol):
    def poweroff(self, files: InstanceFiles) -> bool:
        """Asks the instance's guest to power off; True once it has accepted, False when it
        could not be asked (the caller then uses the backend's power button)."""


class SSHGuestPower:
    """Over the instance's SSH: its client key, the guest's pinned host key, its port."""

    def __init__(self, command: str = POWEROFF) -> None:
        self.command = command

    def poweroff(self, files: InstanceFiles) -> bool:
        # paramiko is slow to import; only stopping a running guest needs it here.
        import paramiko

        from pyd.ssh.connect import SSHTarget, connect
        from pyd.ssh.keys import read_public

        try:
            state = load_state(files.state)
            if state is None:
                return False
            host_key = read_public(files.host_key)
            target = SSHTarget("127.0.0.1", state.ssh_port, GUEST_USER, files.client_key, host_key)
            client = connect(target, timeout=HANDSHAKE_TIMEOUT, connect_timeout=CONNECT_TIMEOUT)
        except (PydError, OSError, paramiko.SSHException, EOFError, ValueError):
            # No state or keys, nothing listening, a host key that is not the pinned one
            # (HostKeyMismatchError is a PydError): never a reason to fail the stop.
            return False
        try:
            _stdin, stdout, _stderr = client.exec_command(self.command, timeout=COMMAND_TIMEOUT)
            channel = stdout.channel
            # A closed channel without a status counts too: init may kill sshd first.
            if not channel.status_event.wait(COMMAND_TIMEOUT):
                return False
            return channel.exit_status in (0, -1)
        except (OSError, paramiko.SSHException, EOFError):
            return False
        finally:
            client.close()


SSH_GUEST = SSHGuestPower()
