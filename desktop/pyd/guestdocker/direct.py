"""`pyd docker` on an SSH connection of its own, made with the instance's key and the
guest's pinned host key (as `pyd ssh` does): where the agent's exec socket is not there."""

from __future__ import annotations

import threading

import paramiko

from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.instance.registry import Instance, name_option
from pyd.ssh.connect import HostKeyMismatchError, SSHTarget, connect
from pyd.ssh.keys import read_public
from pyd.ssh.link_errors import LINK_ERRORS

GUEST_USER = "root"  # the agent's user too: the guest's docker socket is root's


class Connecting:
    """`_connect` in a thread of its own, a ThreadOwner (pyd.host.threads): result() waits
    for the connection (or raises what connecting raised); close() abandons it, closed as
    soon as it is made. Nobody need join an abandoned one: its thread is a daemon, and
    `pyd docker` exits with the error that made it abandon."""

    def __init__(self, inst: Instance, port: int) -> None:
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, args=(inst, port), name="pyd-docker-connect", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self, inst: Instance, port: int) -> None:
        try:
            client = _connect(inst, port)
        except BaseException as e:
            self._error = e
            return
        with self._lock:
            self._client = client
            if self._abandoned:
                client.close()

    def result(self) -> paramiko.SSHClient:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._client is not None
        return self._client

    def close(self) -> None:
        with self._lock:
            self._abandoned = True
            if self._client is not None:
                self._client.close()

    def join(self, deadline: Deadline) -> bool:
        return join_threads([self._thread], deadline)


def _connect(inst: Instance, port: int) -> paramiko.SSHClient:
    # The guest's host key, as pyd generated it for the seed: pinned. Read directly: the module
    # that makes keys (pyd.instance.provision) is slow to import, and they exist once started.
    try:
        host_key = read_public(inst.files.host_key)
    except FileNotFoundError:
        from pyd.instance.provision import instance_keys

        host_key = instance_keys(inst.files)[1].public_openssh
    target = SSHTarget("127.0.0.1", port, GUEST_USER, inst.files.client_key, host_key)
    try:
        return connect(target)
    except HostKeyMismatchError:
        raise
    except LINK_ERRORS as e:
        raise PydError(
            f"cannot reach the guest of {inst.name!r} over SSH on 127.0.0.1:{port} ({e})",
            hint=f"`pyd status{name_option(inst.name)}` shows its state; `pyd start"
            f"{name_option(inst.name)}` starts it",
        ) from None


