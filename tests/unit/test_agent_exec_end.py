r"""The end of an agent's exec session (pyd issue 17): the client gets every byte of output
and the exit code however slowly it reads, and a client that never hangs up holds the
connection's thread only for CLOSE_WAIT.

Windows cannot run here, so the pipe's part runs on a stand-in with what matters of a named
pipe (relay/named_pipe.py's _PipeStream on the agent's side): a bounded buffer, a flush that
waits until the client has read everything, a zero-length message for the end of writing,
and a disconnect that discards what the client has not read yet, as DisconnectNamedPipe
does. The agent's real connection code and the real client run on it."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pyd.agent import exec_server
from pyd.agent.exec_server import _ExecConnections
from pyd.guestdocker import agent_link
from pyd.guestdocker.agent_link import run_through_agent
from pyd.guestdocker.exec_frames import TO_CLIENT, Kind, frame, read_frame
from pyd.guestdocker.exec_protocol import ExecEndpoint, ExecRequest, encode_request
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.streams import HostStreams
from pyd.host.threads import Deadline

OUTPUT = 3 * 1024 * 1024  # several MB queued behind a slow reader
PIPE_BUFFER = 64 * 1024  # as relay.named_pipe.BUFFER_SIZE
SLOW = 0.002  # s before each of the client's reads


class _Pipe:
    """Both ends of one pipe instance; `server` and `client` are their adapters."""

    def __init__(self, read_delay: float = 0.0) -> None:
        self.changed = threading.Condition()
        self.to_client = bytearray()
        self.to_server = bytearray()
        self.end_of_writing = False  # the server's zero-length message, once read up to it
        self.disconnected = False  # DisconnectNamedPipe: unread bytes are gone
        self.server_closed = False
        self.client_closed = False
        self.discarded = 0
        self.server = _ServerEnd(self)
        self.client = _ClientEnd(self, read_delay)


class _ServerEnd:
    def __init__(self, pipe: _Pipe) -> None:
        self._p = pipe
        self._read_eof = False
        self._write_closed = False

    def recv(self, bufsize: int, /) -> bytes:
        p = self._p
        with p.changed:
            p.changed.wait_for(
                lambda: p.to_server or p.client_closed or p.disconnected or self._read_eof
            )
            data = bytes(p.to_server[:bufsize])
            del p.to_server[: len(data)]
            return data

    def sendall(self, data: bytes, /) -> None:
        p = self._p
        view = memoryview(data)
        with p.changed:
            while view:
                if self._write_closed or p.disconnected or p.client_closed:
                    raise BrokenPipeError("the pipe client has gone")
                room = PIPE_BUFFER - len(p.to_client)
                if room <= 0:
                    p.changed.wait()
                    continue
                p.to_client += view[:room]
                view = view[room:]
                p.changed.notify_all()

    def shutdown(self, how: int, /) -> None:
        p = self._p
        with p.changed:
            if how in (socket.SHUT_WR, socket.SHUT_RDWR) and not self._write_closed:
                self._write_closed = True
                if how == socket.SHUT_WR:  # FlushFileBuffers, then the zero-length message
                    p.changed.wait_for(
                        lambda: not p.to_client or p.client_closed or p.disconnected
                    )
                    p.end_of_writing = True
            if how in (socket.SHUT_RD, socket.SHUT_RDWR):
                self._read_eof = True
            if how == socket.SHUT_RDWR:  # DisconnectNamedPipe
                p.discarded += len(p.to_client)
                p.to_client.clear()
                p.disconnected = True
            p.changed.notify_all()

    def close(self) -> None:
        """CloseHandle: the client still reads what is buffered, then the pipe's end."""
        with self._p.changed:
            self._p.server_closed = True
            self._p.changed.notify_all()


class _ClientEnd:
    def __init__(self, pipe: _Pipe, read_delay: float) -> None:
        self._p = pipe
        self._delay = read_delay

    def recv(self, bufsize: int, /) -> bytes:
        time.sleep(self._delay)
        p = self._p
        with p.changed:
            p.changed.wait_for(
                lambda: p.to_client or p.end_of_writing or p.disconnected or p.server_closed
            )
            data = bytes(p.to_client[:bufsize])
            del p.to_client[: len(data)]
            p.changed.notify_all()
            return data

    def sendall(self, data: bytes, /) -> None:
        p = self._p
        with p.changed:
            if p.disconnected or p.server_closed:
                raise BrokenPipeError("the pipe is being closed")
            p.to_server += data
            p.changed.notify_all()

    def close(self) -> None:
        with self._p.changed:
            self._p.client_closed = True
            self._p.changed.notify_all()


@pytest.fixture
def out_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pyd-exec-end-") as d:
        yield Path(d)


def _serve(pipe: _Pipe, transport: paramiko.Transport) -> _ExecConnections:
    conns = _ExecConnections("test pipe", lambda: transport)
    conns.spawn(pipe.server)
    return conns


def _client(
    pipe: _Pipe, monkeypatch: pytest.MonkeyPatch, out_dir: Path, *args: str
) -> tuple[int | None, bytes]:
    """The real client on the pipe's client end: its exit code and its stdout."""
    monkeypatch.setattr(agent_link, "_connect", lambda endpoint: pipe.client)
    endpoint = ExecEndpoint("pipe", r"\\.\pipe\pyd-test.exec")
    with (
        open(os.devnull, "rb") as i,
        open(out_dir / "out", "wb") as o,
        open(out_dir / "err", "wb") as e,
    ):
        streams = HostStreams(i.fileno(), o.fileno(), e.fileno())
        code = run_through_agent(endpoint, GuestCommand("/", args), streams)
    return code, (out_dir / "out").read_bytes()


def _big_output(code: int) -> tuple[str, ...]:
    return ("sh", "-c", f"yes 0123456789abcdef | head -c {OUTPUT}; exit {code}")


def test_a_slow_reader_on_the_pipe_gets_all_output_and_the_exit_code(
    transport: paramiko.Transport, monkeypatch: pytest.MonkeyPatch, out_dir: Path
) -> None:
    pipe = _Pipe(read_delay=SLOW)
    conns = _serve(pipe, transport)
    code, out = _client(pipe, monkeypatch, out_dir, *_big_output(5))
    assert conns.join(Deadline(10))
    assert (code, len(out), pipe.discarded) == (5, OUTPUT, 0)
    assert out == (b"0123456789abcdef\n" * (OUTPUT // 17 + 1))[:OUTPUT]


def test_a_slow_reader_on_a_socket_gets_all_output_and_the_exit_code(
    transport: paramiko.Transport, monkeypatch: pytest.MonkeyPatch, out_dir: Path
) -> None:
    """Over the real Unix socket server, framed, with the client late to each read."""
    monkeypatch.setenv("PYD_EXEC_FRAMED", "1")
    path = out_dir / "exec.sock"
    real_connect = agent_link._connect

    def slow_connect(endpoint: ExecEndpoint) -> agent_link.HostStream | None:
        conn = real_connect(endpoint)
        assert isinstance(conn, socket.socket)
        return _SlowSocket(conn)

    monkeypatch.setattr(agent_link, "_connect", slow_connect)
    with (
        exec_server.exec_server(path, lambda: transport),
        open(os.devnull, "rb") as i,
        open(out_dir / "out", "wb") as o,
        open(out_dir / "err", "wb") as e,
    ):
        streams = HostStreams(i.fileno(), o.fileno(), e.fileno())
        code = run_through_agent(path, GuestCommand("/", _big_output(9)), streams)
    out = (out_dir / "out").read_bytes()
    assert (code, len(out)) == (9, OUTPUT)


class _SlowSocket:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, bufsize: int, /) -> bytes:
        time.sleep(SLOW)
        return self._sock.recv(bufsize)

    def sendall(self, data: bytes, /) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        self._sock.close()


def test_a_client_that_hangs_up_at_once_does_not_wait_for_the_bound(
    transport: paramiko.Transport, monkeypatch: pytest.MonkeyPatch, out_dir: Path
) -> None:
    monkeypatch.setattr(exec_server, "CLOSE_WAIT", 60.0)
    pipe = _Pipe()
    conns = _serve(pipe, transport)
    assert _client(pipe, monkeypatch, out_dir, "sh", "-c", "echo hi; exit 3") == (3, b"hi\n")
    assert conns.join(Deadline(10))  # the client's hang-up ended it, not the bound


def test_a_client_that_never_reads_holds_the_connection_only_for_the_bound(
    transport: paramiko.Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output and the exit code fit in the pipe, and the agent's flush would wait for
    them to be read for ever: the client is cut after the bound instead."""
    monkeypatch.setattr(exec_server, "CLOSE_WAIT", 0.5)
    pipe = _Pipe()
    args = ("sh", "-c", "head -c 10000 /dev/zero; exit 2")
    request = encode_request(ExecRequest(GuestCommand("/", args), framed=True))
    pipe.client.sendall(request + frame(Kind.STDIN_EOF))
    conns = _serve(pipe, transport)
    assert conns.join(Deadline(10))
    assert pipe.disconnected and pipe.discarded > 10000  # what it never read, and the end


def test_a_client_that_never_hangs_up_is_cut_after_the_bound(
    transport: paramiko.Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exec_server, "CLOSE_WAIT", 0.5)
    pipe = _Pipe()
    request = encode_request(ExecRequest(GuestCommand("/", ("sh", "-c", "exit 4")), framed=True))
    pipe.client.sendall(request + frame(Kind.STDIN_EOF))
    conns = _serve(pipe, transport)
    frames = []
    while (got := read_frame(pipe.client.recv, TO_CLIENT)) is not None:
        frames.append(got[0])
    assert frames[-1] is Kind.EXIT  # then the end of writing: the client could hang up now
    assert conns.join(Deadline(10))
    assert pipe.disconnected and pipe.discarded == 0
