"""Connections to Unix sockets in the guest over SSH: OpenSSH's "direct-streamlocal@openssh.com"
channel (OpenSSH PROTOCOL, section 2.4), the channel `ssh -L host.sock:/var/run/docker.sock`
opens for every connection.

paramiko has no such channel type (paramiko#544, open since 2015): pyd.ssh.channel_open lets
paramiko do all of the open and appends the three fields it cannot write (`string socket
path, string reserved, uint32 reserved`) to that one message. tests/unit/test_relay.py reads
the fields back the way sshd parses them; tests/e2e/test_docker_socket.py opens channels on
the guest's OpenSSH.
"""

from __future__ import annotations

import paramiko

from pyd.errors import PydError
from pyd.ssh.channel_open import OpenNotCompletedError, channel_open_errors, open_channel

KIND = "direct-streamlocal@openssh.com"


class StreamLocalError(PydError):
    """The guest's sshd would not connect us to a Unix socket, or the SSH connection failed."""

    def __init__(self, message: str, path: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.path = path


def open_streamlocal(
    transport: paramiko.Transport, path: str, timeout: float = 10
) -> paramiko.Channel:
    """A channel connected to the Unix socket `path` on the SSH server's side.

    Raises StreamLocalError (carrying `path`) when sshd refuses (no such socket, nobody
    listening, AllowStreamLocalForwarding off) or the SSH connection is gone or too slow."""

    def add_fields(m: paramiko.Message) -> None:
        m.add_string(path)
        m.add_string("")  # reserved (OpenSSH: originator address, unused)
        m.add_int(0)  # reserved (originator port)

    with channel_open_errors(
        path,
        "is the service behind that socket running in the guest? "
        "(for Docker: `pyd ssh -- systemctl status docker`)",
        lambda message, hint: StreamLocalError(message, path, hint),
    ):
        try:
            return open_channel(transport, KIND, timeout, add_fields)
        except OpenNotCompletedError as e:
            raise StreamLocalError(e.message, path, e.hint) from None
