"""A paramiko SSH server in a thread, the way paramiko's own tests run one: a real server
Transport on a real socket (a socket pair, or loopback TCP), no mocks of the protocol. A test
gives it a ServerInterface deciding which channels open, and a handler for each that does."""

from __future__ import annotations

import functools
import io
import socket
import threading
from collections.abc import Callable

import paramiko

from pyd.ssh.keys import KeyPair, generate_keypair


@functools.cache
def host_keypair() -> KeyPair:
    """The test servers' host key (one for the session: generating one is not what is tested)."""
    return generate_keypair("test-host")


class AllowAnyone(paramiko.ServerInterface):  # type: ignore[misc]
    """Authenticates anyone, without credentials or with any key; subclasses allow channels."""

    def get_allowed_auths(self, username: str) -> str:
        return "none,publickey"

    def check_auth_none(self, username: str) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL


class SSHServer:
    """Serves SSH on `transport` (a server-side Transport not yet started) as `interface`
    decides; every channel it accepts goes to `handle`, in a thread of its own."""

    def __init__(
        self,
        transport: paramiko.Transport,
        interface: paramiko.ServerInterface,
        handle: Callable[[paramiko.Channel], None],
    ) -> None:
        self.transport = transport
        self._handle = handle
        transport.add_server_key(
            paramiko.Ed25519Key.from_private_key(io.StringIO(host_keypair().private_openssh))
        )
        # With an event, start_server returns at once (the client has yet to start).
        self.negotiated = threading.Event()
        transport.start_server(event=self.negotiated, server=interface)
        self._stop = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self._stop:
            chan = self.transport.accept(0.2)
            if chan is not None:
                threading.Thread(target=self._handle, args=(chan,), daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._acceptor.join()
        self.transport.close()


def client_without_auth(sock: socket.socket, server: SSHServer) -> paramiko.Transport:
    """A bare client Transport on `sock` to `server`, logged in as "pyd" with the "none"
    method."""
    client = paramiko.Transport(sock)
    client.start_client(timeout=10)
    server.negotiated.wait(10)
    client.auth_none("pyd")
    return client
