"""`pyd docker` through the host agent: the command runs on the agent's open SSH connection
(pyd.agent.exec_server), so no handshake is made for it. This process hands over its stdin,
stdout and stderr, keeps its terminal in raw mode for an interactive command, passes on the
signals it receives, and waits for the exit code.

Imports neither paramiko nor the SSH session: a short command's time is mostly Python's
start-up once the handshake is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from pyd.errors import PydError
from pyd.guestdocker import terminal
from pyd.guestdocker.exec_protocol import (
    ExecRequest,
    ProtocolError,
    decode_message,
    encode_request,
    signal_message,
)
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.streams import HostStreams, signals_to, taken_signals

SUPPORTED = sys.platform != "win32" and hasattr(socket, "send_fds")


class AgentCommandError(PydError):
    """The agent could not get docker's exit code; `exit_code` is what it chose instead."""

    def __init__(self, message: str, hint: str, exit_code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


def run_through_agent(path: Path, command: GuestCommand, streams: HostStreams) -> int | None:
    """docker's exit code for `command` run by the agent serving `path`, or None when no
    agent serves it (an agent from an older pyd, a host without descriptor passing): the
    caller then connects by itself."""
    if not SUPPORTED:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.connect(os.fspath(path))
        except OSError:  # none there, a stale socket, a path too long: nothing is lost
            return None
        interactive = streams.interactive()
        request = ExecRequest(command, terminal.term_name(os.environ) if interactive else None)

        def forward(signum: int) -> None:
            with contextlib.suppress(OSError):  # the agent has gone: the wait below says so
                sock.sendall(signal_message(signum))

        with _raw_mode(interactive, streams.stdin), signals_to(
            forward, taken_signals(interactive)
        ):
            socket.send_fds(sock, [encode_request(request)], streams.fds())
            return _exit_code(sock)


@contextlib.contextmanager
def _raw_mode(interactive: bool, fd: int) -> Iterator[None]:
    if not interactive:
        yield
        return
    with terminal.raw_mode(fd):
        yield


def _exit_code(sock: socket.socket) -> int:
    with sock.makefile("rb") as lines:
        for line in lines:
            try:
                message = decode_message(line)
            except ProtocolError:
                continue
            code = message.get("exit")
            if not isinstance(code, int):
                continue
            if message.get("error"):
                raise AgentCommandError(str(message["error"]), str(message.get("hint", "")), code)
            return code
    raise AgentCommandError(
        "the instance's agent ended before docker did (no exit code came back)",
        "`pyd status` shows the instance's state; the command may have run or not",
        1,
    )
