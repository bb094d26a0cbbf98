"""`pyd docker` through the host agent: the command runs on the agent's open SSH connection
(pyd.agent.exec_server), so no handshake is made for it. This process hands over its stdin,
stdout and stderr, keeps its terminal in raw mode for an interactive command once the guest's
PTY exists, passes on the signals it receives (Ctrl-Z pauses the command's streams while it
is stopped), gives up on the third Ctrl-C, and waits for the exit code.

Imports neither paramiko nor the SSH session: a short command's time is mostly Python's
start-up once the handshake is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
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
from pyd.guestdocker.streams import (
    INTERRUPTS_TO_GIVE_UP,
    PAUSE_SIGNALS,
    HostStreams,
    signals_to,
    taken_signals,
)

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
    if sys.platform == "win32" or not SUPPORTED:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with sock:
        try:
            sock.connect(os.fspath(path))
        except OSError:  # none there, a stale socket, a path too long: nothing is lost
            return None
        interactive = streams.interactive()
        raw = terminal.RawTerminal(streams.stdin) if interactive else None
        if interactive:
            terminal.wait_for_foreground(streams.stdin)
        request = ExecRequest(command, terminal.term_name(os.environ) if interactive else None)
        link = _Link(sock, raw)
        try:
            with signals_to(link.on_signal, [*taken_signals(interactive), *_STOP]):
                link.send_request(encode_request(request), streams.fds())
                return link.exit_code()
        except _GaveUp:
            return 128 + signal.SIGINT
        finally:
            if raw is not None:
                raw.leave()


_STOP = PAUSE_SIGNALS[:1]  # SIGTSTP; SIGCONT is sent once this process is continued


class _GaveUp(Exception):
    """Ctrl-C pressed INTERRUPTS_TO_GIVE_UP times: stop waiting (the agent is stuck)."""


class _Link:
    """The client's side of one command. Signal handlers run in the main thread, between
    two steps of whatever it does: what they send waits until the request has gone."""

    def __init__(self, sock: socket.socket, raw: terminal.RawTerminal | None) -> None:
        self._sock = sock
        self._raw = raw
        self._sent = False
        self._started = False
        self._pending: list[int] = []
        self._interrupts = 0

    def send_request(self, request: bytes, fds: list[int]) -> None:
        if sys.platform == "win32":  # never made there (SUPPORTED)
            raise NotImplementedError
        try:
            sent = socket.send_fds(self._sock, [request], fds)
            if sent < len(request):
                self._sock.sendall(request[sent:])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent hung up early: what it said before, if anything, is read next
        self._sent = True
        pending, self._pending = self._pending, []
        for signum in pending:
            self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        if not self._sent:
            self._pending.append(signum)
            return
        if signum == signal.SIGINT:
            self._interrupts += 1
            if self._interrupts >= INTERRUPTS_TO_GIVE_UP:
                raise _GaveUp()
        if signum in _STOP:
            self._stop()
            return
        self._send(signum)

    def _stop(self) -> None:
        """Ctrl-Z: the agent pauses the command's streams, and this process stops (with
        its terminal as it found it) until continued."""
        if sys.platform == "win32":  # never made there (SUPPORTED)
            raise NotImplementedError
        self._send(signal.SIGTSTP)
        if self._raw is not None:
            self._raw.leave()
        os.kill(os.getpid(), signal.SIGSTOP)
        if self._raw is not None and self._started:
            self._raw.enter()
        self._send(signal.SIGCONT)

    def _send(self, signum: int) -> None:
        with contextlib.suppress(OSError):  # the agent has gone: exit_code() says so
            self._sock.sendall(signal_message(signum))

    def exit_code(self) -> int:
        with self._sock.makefile("rb") as lines:
            for line in lines:
                try:
                    message = decode_message(line)
                except ProtocolError:
                    continue
                if message.get("started"):
                    # The guest's PTY exists now: keys go to it raw from here on, and a
                    # Ctrl-C before this point still reached pyd (as with `ssh -t`).
                    self._started = True
                    if self._raw is not None:
                        self._raw.enter()
                    continue
                code = message.get("exit")
                if not isinstance(code, int):
                    continue
                if message.get("error"):
                    raise AgentCommandError(
                        str(message["error"]), str(message.get("hint", "")), code
                    )
                return code
        raise AgentCommandError(
            "the instance's agent ended before docker did (no exit code came back)",
            "`pyd status` shows the instance's state; the command may have run or not",
            1,
        )
