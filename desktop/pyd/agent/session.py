"""The agent's one SSH connection to the guest, replaced when it drops. Forwards ask it
for the current transport, so a reconnect restores them without their knowing."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import paramiko

from pyd.errors import PydError
from pyd.ssh.connect import SSHTarget, wait_for_ssh

log = logging.getLogger("pyd.agent")


class SSHDown(PydError):
    """No SSH connection to the guest right now (it is being re-made)."""


class SSHSession:
    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self._client: paramiko.SSHClient | None = None
        self._cond = threading.Condition()

    def connect(self, deadline: float) -> None:
        """Connect (again) before `deadline` (time.monotonic()); HostKeyMismatchError and
        PydError from wait_for_ssh pass through."""
        client = wait_for_ssh(self.target, deadline)
        with self._cond:
            old, self._client = self._client, client
            self._cond.notify_all()
        if old is not None:
            old.close()

    def alive(self) -> bool:
        with self._cond:
            transport = self._client.get_transport() if self._client else None
        return transport is not None and transport.is_active()

    def transport(self, wait: float) -> paramiko.Transport:
        """The live transport, waiting up to `wait` seconds for a reconnect."""
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                transport = self._client.get_transport() if self._client else None
                if transport is not None and transport.is_active():
                    return transport
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SSHDown("the SSH connection to the guest is down")
                self._cond.wait(min(left, 0.5))

    def client(self, wait: float) -> paramiko.SSHClient:
        self.transport(wait)
        with self._cond:
            assert self._client is not None
            return self._client

    def drop(self) -> None:
        """Cut the connection (the supervisor re-makes it)."""
        with self._cond:
            client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        with self._cond:
            client, self._client = self._client, None
            self._cond.notify_all()
        if client is not None:
            client.close()
