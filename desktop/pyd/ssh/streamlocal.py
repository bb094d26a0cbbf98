"""Connections to Unix sockets in the guest over SSH: OpenSSH's "direct-streamlocal@openssh.com"
channel (OpenSSH PROTOCOL, section 2.4), the channel `ssh -L host.sock:/var/run/docker.sock`
opens for every connection.

paramiko has no such channel type (paramiko#544, open since 2015). Its public
`Transport.open_channel(kind)` does everything a channel needs (id, windows, waiting for the
answer, turning a refusal into ChannelException) except the type-specific fields, which it only
writes for the kinds it knows. We let it do all of that and add the three missing fields on the
way out, so this module depends on exactly one paramiko internal:

- `Transport._send_user_message(m)`: `open_channel` hands its CHANNEL_OPEN message to it, on the
  calling thread, with nothing after the maximum packet size for an unknown kind. We wrap it on
  each transport we use (once) and append `string socket path, string reserved, uint32
  reserved` to that one message. The wrapper touches nothing else: every other message, and
  every CHANNEL_OPEN sent by another thread, passes through unchanged.

Should a paramiko release stop sending through that method, the open would go out without the
path; `open_streamlocal` notices (the path was never consumed) and says so rather than leaving
the caller with a puzzling protocol error. tests/unit/test_relay.py reads the fields back the
way sshd parses them; tests/e2e/test_docker_socket.py opens channels on the guest's OpenSSH.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import paramiko
from paramiko.common import MSG_CHANNEL_OPEN

from pyd.errors import PydError
from pyd.ssh.channel_open import channel_open_errors

KIND = "direct-streamlocal@openssh.com"

_WRAPPED = "_pyd_streamlocal_wrapped"
_wrap_lock = threading.Lock()
_pending = threading.local()  # .path: the socket path this thread's next open carries


class StreamLocalError(PydError):
    """The guest's sshd would not connect us to a Unix socket, or the SSH connection failed."""

    def __init__(self, message: str, path: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.path = path


def _is_streamlocal_open(m: paramiko.Message) -> bool:
    probe = paramiko.Message(m.asbytes())
    return bool(probe.get_byte()[0] == MSG_CHANNEL_OPEN and probe.get_text() == KIND)


def _wrap_send(transport: paramiko.Transport) -> None:
    """Installs (once per transport) the wrapper that completes our CHANNEL_OPEN messages."""
    with _wrap_lock:
        if getattr(transport, _WRAPPED, False):
            return
        send: Callable[[paramiko.Message], Any] = transport._send_user_message

        def send_user_message(m: paramiko.Message) -> Any:
            path = getattr(_pending, "path", None)
            if path is not None and _is_streamlocal_open(m):
                _pending.path = None
                m.add_string(path)
                m.add_string("")  # reserved (OpenSSH: originator address, unused)
                m.add_int(0)  # reserved (originator port)
            return send(m)

        transport._send_user_message = send_user_message
        setattr(transport, _WRAPPED, True)


def open_streamlocal(
    transport: paramiko.Transport, path: str, timeout: float = 10
) -> paramiko.Channel:
    """A channel connected to the Unix socket `path` on the SSH server's side.

    Raises StreamLocalError (carrying `path`) when sshd refuses (no such socket, nobody
    listening, AllowStreamLocalForwarding off) or the SSH connection is gone or too slow."""
    _wrap_send(transport)
    _pending.path = path
    try:
        with channel_open_errors(
            path,
            "is the service behind that socket running in the guest? "
            "(for Docker: `pyd ssh -- systemctl status docker`)",
            lambda message, hint: StreamLocalError(message, path, hint),
        ):
            chan = transport.open_channel(KIND, timeout=timeout)
    finally:
        unsent = getattr(_pending, "path", None) is not None
        _pending.path = None
    if unsent:
        chan.close()
        raise StreamLocalError(
            f"this paramiko ({paramiko.__version__}) did not send its channel open through "
            "Transport._send_user_message, so the socket path was never sent",
            path,
            hint="pin paramiko to a version pyd supports (see pyd/ssh/streamlocal.py)",
        )
    return chan
