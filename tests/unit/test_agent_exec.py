"""The agent's exec socket beyond what test_guestdocker_run.py checks on both paths: a client
that is killed, an agent that stops or has no SSH, requests that are not the protocol, the
descriptors the agent is given, who may connect. The agent's server runs in this process on
a connection to a stand-in guest (tests/unit/fakeguest.py); clients are this process or a
child process."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import paramiko
import pytest

from pyd.agent.exec_server import exec_server
from pyd.agent.session import SSHDown
from pyd.errors import PydError
from pyd.guestdocker.agent_link import AgentCommandError, run_through_agent
from pyd.guestdocker.exec_frames import (
    FRAME_HEADER,
    MAX_FRAME,
    STDIN_CREDIT,
    TO_CLIENT,
    Kind,
    frame,
    parse_number,
    read_frame,
)
from pyd.guestdocker.exec_protocol import (
    HEADER,
    STREAM_FDS,
    ExecRequest,
    decode_message,
    decode_request,
    encode_request,
    exit_message,
    request_length,
)
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.streams import HostStreams
from pyd.relay.connections import ServedForward
from tests.unit.fakeguest import Guest
from tests.unit.polling import until

WAIT = 30.0
MODES = ["fds", "framed"]  # the client's streams as descriptors, or as frames


def _mode(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The way of clients in this process and of the child processes it starts."""
    if mode == "framed":
        monkeypatch.setenv("PYD_EXEC_FRAMED", "1")
    else:
        monkeypatch.delenv("PYD_EXEC_FRAMED", raising=False)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pyd-exec-", dir="/tmp"))  # short: sun_path
    yield directory / "sock"
    shutil.rmtree(directory)


@contextlib.contextmanager
def serving(
    sock_dir: Path, transport: Callable[[], paramiko.Transport]
) -> Iterator[ServedForward]:
    with exec_server(sock_dir / "exec.sock", transport) as server:  # closed and joined after
        yield server


def _run(path: Path, tmp_path: Path, *args: str) -> tuple[int | None, bytes, bytes]:
    with (
        open(os.devnull, "rb") as i,
        open(tmp_path / "out", "wb") as o,
        open(tmp_path / "err", "wb") as e,
    ):
        code = run_through_agent(
            path, GuestCommand("/", args), HostStreams(i.fileno(), o.fileno(), e.fileno())
        )
    return code, (tmp_path / "out").read_bytes(), (tmp_path / "err").read_bytes()


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    until(condition, WAIT, 0.01, what)


def _gone(pid: int) -> bool:
    """Ended (a zombie waiting for its parent counts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def _open_fds() -> set[str]:
    """What this process has open: descriptor numbers with what they are."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, gone by now
            found.add(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return found


def test_the_socket_is_private(sock_dir: Path, transport: paramiko.Transport) -> None:
    with serving(sock_dir, lambda: transport):
        assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((sock_dir / "exec.sock").stat().st_mode) == 0o600
    assert not (sock_dir / "exec.sock").exists()  # removed when the agent stops


def test_without_an_agent_the_client_connects_by_itself(sock_dir: Path, tmp_path: Path) -> None:
    assert _run(sock_dir / "exec.sock", tmp_path, "true")[0] is None  # no socket
    sock_dir.mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_dir / "exec.sock"))
    stale.close()  # an agent that died: the file stays, nobody listens
    assert _run(sock_dir / "exec.sock", tmp_path, "true")[0] is None


@pytest.mark.parametrize("mode", MODES)
def test_the_agent_closes_every_descriptor_it_was_given(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _mode(monkeypatch, mode)
    with serving(sock_dir, lambda: transport):
        _run(sock_dir / "exec.sock", tmp_path, "true")  # threads and buffers settle
        before = _open_fds()
        for code in (0, 3):
            assert _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", f"exit {code}")[0] == code
        # The agent's side of a connection may close just after its client has the code.
        _wait_for(lambda: _open_fds() <= before, "no descriptor left open")


def test_the_agent_without_ssh_says_so(sock_dir: Path, tmp_path: Path) -> None:
    def down() -> paramiko.Transport:
        raise SSHDown("the SSH connection to the guest is down")

    with serving(sock_dir, down), pytest.raises(AgentCommandError) as raised:
        _run(sock_dir / "exec.sock", tmp_path, "true")
    assert raised.value.message == "the SSH connection to the guest is down"
    assert raised.value.exit_code == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_agent_stopping_ends_the_command_with_a_message(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _mode(monkeypatch, mode)
    pid_file = tmp_path / "pid"
    with serving(sock_dir, lambda: transport) as server:
        stopper = threading.Thread(
            target=lambda: (_wait_for(pid_file.exists, "the command started"), server.close())
        )
        stopper.start()
        with pytest.raises(AgentCommandError, match="agent stopped while the command ran"):
            _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", f"echo $$ > {pid_file}; sleep 600")
        stopper.join()
    _wait_for(lambda: _gone(int(pid_file.read_text())), "the command ended in the guest")


CLIENT = """
import sys
from pathlib import Path
from pyd.guestdocker.agent_link import run_through_agent
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.streams import HostStreams, open_standard_fds
open_standard_fds()  # as pyd.cli.entry does first
code = run_through_agent(Path(sys.argv[1]), GuestCommand("/", tuple(sys.argv[2:])),
                         HostStreams.standard())
sys.exit(code)
"""


def _client(
    sock_dir: Path, *args: str, stdout: int | None = None, stderr: int | None = None
) -> subprocess.Popen[bytes]:
    """A `pyd docker` client of its own (CLIENT) running `args`, stdin the null device."""
    argv = [sys.executable, "-c", CLIENT, str(sock_dir / "exec.sock"), *args]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)


@pytest.mark.parametrize("mode", MODES)
def test_a_killed_client_gets_its_command_killed_in_the_guest(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`kill -9` of the client: as of a local docker CLI, whose process group goes, while
    the agent goes on serving."""
    _mode(monkeypatch, mode)
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}; sleep 600; echo not-killed"
    with serving(sock_dir, lambda: transport):
        client = _client(sock_dir, "sh", "-c", script, stdout=subprocess.PIPE)
        try:
            _wait_for(pid_file.exists, "the command started")
            client.send_signal(signal.SIGKILL)
        finally:
            client.wait()
            assert client.stdout is not None
            out = client.stdout.read()  # ends: the agent has closed its copy too
            client.stdout.close()
        _wait_for(lambda: _gone(int(pid_file.read_text())), "the command ended in the guest")
        assert out == b""
        assert _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", "exit 4")[0] == 4


@pytest.mark.parametrize("mode", MODES)
def test_a_signal_to_the_client_reaches_the_command(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C in a terminal whose output is piped: the client is a separate process."""
    _mode(monkeypatch, mode)
    script = "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done"
    with serving(sock_dir, lambda: transport):
        client = _client(sock_dir, "sh", "-c", script, stdout=subprocess.PIPE)
        assert client.stdout is not None
        assert client.stdout.readline() == b"ready\n"
        client.send_signal(signal.SIGINT)
        assert client.stdout.read() == b"got-int\n"
        assert client.wait(WAIT) == 42


@pytest.mark.parametrize("fds", [0, 1, 3])
def test_requests_outside_the_protocol_are_dropped_and_serving_goes_on(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path, fds: int
) -> None:
    with serving(sock_dir, lambda: transport), open(os.devnull, "rb") as null:
        _run(sock_dir / "exec.sock", tmp_path, "true")  # the server's own descriptors settle
        before = _open_fds()
        good = encode_request(ExecRequest(GuestCommand("/", ("true",))))
        for data in (b"\0\0\0\5{oops", b"\xff\xff\xff\xff", b"\0", good[:-1]):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(str(sock_dir / "exec.sock"))
                socket.send_fds(c, [data], [null.fileno()] * fds)
                c.shutdown(socket.SHUT_WR)
                c.settimeout(WAIT)
                # Dropped: the agent hangs up without an answer (a reset: data left unread).
                try:
                    answer = c.recv(100)
                except ConnectionResetError:
                    answer = b""
                assert answer == b""
        assert _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", "exit 5")[0] == 5
        _wait_for(lambda: _open_fds() <= before, "the agent closed the descriptors it got")


@pytest.mark.parametrize("mode", MODES)
def test_a_command_the_guest_refuses_is_an_error_not_a_hang(
    sock_dir: Path, guest: Guest, tmp_path: Path,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The agent's connection breaks mid-command: the client gets pyd's error, exit 1."""
    _mode(monkeypatch, mode)
    client = guest.connect()
    t = client.get_transport()
    assert t is not None
    pid_file = tmp_path / "pid"
    with serving(sock_dir, lambda: t):
        cutter = threading.Thread(
            target=lambda: (_wait_for(pid_file.exists, "the command started"), client.close())
        )
        cutter.start()
        # Cut during the exec request or after it: either way pyd's error, not a hang.
        with pytest.raises(
            PydError, match=r"ended before docker did|SSH connection to the guest failed"
        ) as raised:
            _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", f"echo $$ > {pid_file}; sleep 600")
        cutter.join()
    assert raised.value.exit_code == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_closed_stdin_reads_as_empty(
    sock_dir: Path, transport: paramiko.Transport, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pyd docker ... <&-`: the null device takes 0, or the client's socket to the agent
    would, and be passed as the command's stdin (found so: the command hung)."""
    _mode(monkeypatch, mode)
    with serving(sock_dir, lambda: transport):
        client = subprocess.run(
            [sys.executable, "-c", CLIENT, str(sock_dir / "exec.sock"), "sh", "-c",
             "cat; echo done"],
            preexec_fn=lambda: os.close(0),
            capture_output=True,
            timeout=WAIT,
        )  # fmt: skip
    assert (client.returncode, client.stdout, client.stderr) == (0, b"done\n", b"")


def test_a_signal_before_the_request_waits_for_it(tmp_path: Path) -> None:
    """A window change or Ctrl-C while the request is still being sent goes after it: the
    agent reads the request first (it refused the spliced bytes before)."""
    from pyd.guestdocker.agent_link import _Link

    client, agent = socket.socketpair()
    with client, agent, open(os.devnull, "rb") as null:
        link = _Link(client, None)
        link.on_signal(signal.SIGWINCH)  # as if it came during send_request
        request = encode_request(ExecRequest(GuestCommand("/", ("x" * 300_000,))))
        sender = threading.Thread(target=link.send_request, args=(request, [null.fileno()] * 3))
        sender.start()  # larger than the socket buffer: sent in pieces
        _header, fds, _flags, _addr = socket.recv_fds(agent, HEADER.size, 3)
        body = b""
        while len(body) < len(request) - HEADER.size:
            body += agent.recv(len(request) - HEADER.size - len(body))
        sender.join(WAIT)
        for fd in fds:
            os.close(fd)
        assert decode_request(body).command.args == ("x" * 300_000,)
        assert decode_message(agent.recv(100)) == {"signal": signal.SIGWINCH}


def test_the_client_gives_up_on_the_third_ctrl_c_when_the_agent_is_stuck(
    sock_dir: Path,
) -> None:
    sock_dir.mkdir()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(str(sock_dir / "exec.sock"))
    stuck.listen(1)
    stuck.settimeout(WAIT)
    with stuck:
        client = _client(sock_dir, "true", stderr=subprocess.PIPE)
        agent, _ = stuck.accept()  # and never answers
        with agent:
            agent.settimeout(WAIT)
            # The request has come, so the client's signal handlers are in place.
            header, fds, _flags, _addr = socket.recv_fds(agent, HEADER.size, STREAM_FDS)
            for fd in fds:  # the client's stderr among them: its end of file needs ours closed
                os.close(fd)
            body = _recv_exactly(agent, request_length(header))
            assert decode_request(body).command.args == ("true",)
            lines = agent.makefile("rb")
            for _ in range(2):  # passed on to the command, as long as the client waits
                client.send_signal(signal.SIGINT)
                assert decode_message(lines.readline()) == {"signal": signal.SIGINT}
            client.send_signal(signal.SIGINT)  # the third: it gives up
            assert client.wait(WAIT) == 128 + signal.SIGINT
            lines.close()
    assert client.stderr is not None and b"Traceback" not in client.stderr.read()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "the client hung up mid-request"
        data += chunk
    return data


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_z_stops_the_commands_output_until_continued(
    sock_dir: Path, transport: paramiko.Transport,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _mode(monkeypatch, mode)
    ticking = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.05; done"
    with serving(sock_dir, lambda: transport):
        client = _client(sock_dir, "sh", "-c", ticking, stdout=subprocess.PIPE)
        assert client.stdout is not None
        try:
            assert client.stdout.readline() == b"0\n"
            client.send_signal(signal.SIGTSTP)
            _wait_for(lambda: _state(client.pid) == "T", "the client stopped")
            os.set_blocking(client.stdout.fileno(), False)
            # What was on its way arrives, then nothing, though the command ticks on.
            _wait_for(lambda: _quiet(client.stdout, 0.3), "the output paused")
            client.send_signal(signal.SIGCONT)
            _wait_for(lambda: not _quiet(client.stdout, 0.3), "the output going on")
        finally:
            client.send_signal(signal.SIGCONT)
            client.kill()
            client.wait()


def _quiet(stream: IO[bytes], seconds: float) -> bool:
    """Nothing comes on the non-blocking `stream` for `seconds` (the time is the thing
    tested: a paused command's output)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if os.read(stream.fileno(), 65536):
                return False
        except BlockingIOError:
            pass
        time.sleep(0.01)
    return True


def _state(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("State:"):
            return line.split()[1]
    return ""


def test_an_unexpected_failure_in_the_agent_reaches_the_client(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a hang: the client hears of it (a bug in the agent, say)."""
    from pyd.guestdocker import run

    def broken(self: object) -> int:
        raise ValueError("filedescriptor out of range in select()")

    monkeypatch.setattr(run.GuestSession, "run", broken)
    with serving(sock_dir, lambda: transport), pytest.raises(AgentCommandError) as raised:
        _run(sock_dir / "exec.sock", tmp_path, "true")
    assert "failed to run the command: filedescriptor out of range" in raised.value.message
    assert raised.value.exit_code == 1


# -- the framed mode: by hand, broken, and its bounds ----------------------------------------


def _framed(sock_dir: Path, *args: str) -> socket.socket:
    """A connection that has asked, framed, for `args` (no descriptors)."""
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(sock_dir / "exec.sock"))
    c.settimeout(WAIT)
    c.sendall(encode_request(ExecRequest(GuestCommand("/", args), framed=True)))
    return c


def _all_frames(c: socket.socket) -> list[tuple[Kind, bytes]]:
    found = []
    with contextlib.suppress(ConnectionResetError):
        while (got := read_frame(c.recv, TO_CLIENT)) is not None:
            found.append(got)
    return found


def test_a_framed_session_by_hand(sock_dir: Path, transport: paramiko.Transport) -> None:
    with serving(sock_dir, lambda: transport), _framed(
        sock_dir, "sh", "-c", "cat; printf err >&2; exit 7"
    ) as c:
        c.sendall(frame(Kind.STDIN, b"hello") + frame(Kind.STDIN, b" you") + frame(Kind.STDIN_EOF))
        frames = _all_frames(c)
    out = b"".join(p for k, p in frames if k is Kind.STDOUT)
    err = b"".join(p for k, p in frames if k is Kind.STDERR)
    acked = sum(parse_number(p) for k, p in frames if k is Kind.STDIN_ACK)
    assert (out, err, acked) == (b"hello you", b"err", 9)
    assert frames[-1] == (Kind.EXIT, exit_message(7))  # last: after all of the output


@pytest.mark.parametrize(
    "bad",
    [
        bytes([99, 0, 0, 0, 0]),  # no such frame
        frame(Kind.STDOUT, b"x"),  # the agent's kind of frame
        FRAME_HEADER.pack(Kind.STDIN, MAX_FRAME + 1),  # over the bound
        FRAME_HEADER.pack(Kind.SIGNAL, 1) + b"x",  # the wrong size for its kind
    ],
)
def test_a_bad_frame_drops_the_client_and_ends_its_command(
    sock_dir: Path,
    transport: paramiko.Transport,
    tmp_path: Path,
    bad: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pid_file = tmp_path / "pid"
    with serving(sock_dir, lambda: transport):
        with _framed(sock_dir, "sh", "-c", f"echo $$ > {pid_file}; exec sleep 600") as c:
            _wait_for(pid_file.exists, "the command started")
            c.sendall(bad)
            frames = _all_frames(c)  # ends: the agent hung up
        assert Kind.EXIT not in [k for k, _ in frames]
        _wait_for(lambda: _gone(int(pid_file.read_text())), "the command ended in the guest")
        assert _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", "exit 6")[0] == 6
    assert "a framed client broke the protocol" in caplog.text


def test_stdin_beyond_the_credit_is_refused(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends on without acknowledgements: the agent holds at most the credit
    (then drops it), however much comes."""
    pid_file = tmp_path / "pid"
    chunk = frame(Kind.STDIN, b"x" * MAX_FRAME)
    with serving(sock_dir, lambda: transport):
        with _framed(sock_dir, "sh", "-c", f"echo $$ > {pid_file}; exec sleep 600") as c:
            _wait_for(pid_file.exists, "the command started")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(64 * STDIN_CREDIT // MAX_FRAME):
                    c.sendall(chunk)
            assert Kind.EXIT not in [k for k, _ in _all_frames(c)]
        _wait_for(lambda: _gone(int(pid_file.read_text())), "the command ended in the guest")
    assert "stdin beyond the credit given" in caplog.text


def test_ctrl_c_gets_through_while_the_command_reads_no_stdin(
    sock_dir: Path, transport: paramiko.Transport, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Framed: endless stdin for a command that never reads it backs up to the client (the
    feeder here blocks), and a signal frame does not wait behind it."""
    _mode(monkeypatch, "framed")
    script = "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done"
    written = 0
    with serving(sock_dir, lambda: transport):
        argv = [sys.executable, "-c", CLIENT, str(sock_dir / "exec.sock"), "sh", "-c", script]
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert client.stdin is not None and client.stdout is not None
        stdin = client.stdin

        def feed() -> None:
            nonlocal written
            with contextlib.suppress(BrokenPipeError):
                while True:
                    stdin.write(b"y" * 65536)
                    written += 65536

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        assert client.stdout.readline() == b"ready\n"
        _wait_for(lambda: (w := written) > 0 and _still(lambda: written == w), "stdin backs up")
        client.send_signal(signal.SIGINT)
        assert client.stdout.read() == b"got-int\n"
        assert client.wait(WAIT) == 42
        feeder.join(WAIT)  # the client has gone: its stdin is a broken pipe
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
    # What left the feeder: the guest's SSH window and the pipes, plus at most the credit.
    assert written < 64 * 2**20


def _still(condition: Callable[[], bool], seconds: float = 0.5) -> bool:
    """`condition` holds throughout `seconds` (the time is the thing tested: no progress)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(0.02)
    return True


def test_when_descriptors_cannot_be_passed_the_client_sends_frames(
    sock_dir: Path, transport: paramiko.Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _mode(monkeypatch, "fds")

    def refused(*args: object) -> int:
        raise OSError(errno.EOPNOTSUPP, "descriptor passing refused")

    monkeypatch.setattr(socket, "send_fds", refused)
    with serving(sock_dir, lambda: transport):
        got = _run(sock_dir / "exec.sock", tmp_path, "sh", "-c", "echo hi; echo ho >&2; exit 3")
    assert got == (3, b"hi\n", b"ho\n")
