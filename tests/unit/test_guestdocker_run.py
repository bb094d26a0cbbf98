"""The guest-docker runner against a real SSH server (paramiko, in this process) whose commands
run in a real local shell, reached through pyd's own `connect` with the pinned host key. The
guest's `docker` is a stand-in that runs its arguments as a command (`docker sh -c 'exit 3'`),
so every test sees exactly what a docker CLI in the guest would have been given.

Every test runs three times: `pyd docker` with a connection of its own (run_in_guest), and
through the host agent's exec socket (an exec server in this process on the test's
connection, reached by the client with this process's descriptors, or with its streams as
frames), which must behave the same."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import resource
import shutil
import signal
import struct
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from pyd.agent.exec_server import exec_server
from pyd.errors import PydError
from pyd.guestdocker import tools
from pyd.guestdocker.agent_link import run_through_agent
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.run import OUTPUT_CLOSED, HostStreams, run_in_guest
from pyd.guestdocker.tools import COMPOSE, DOCKER, Tool
from tests.unit.fakeguest import Guest, connected, running_guest
from tests.unit.polling import until

PRINT_ARGV = "import os, sys; sys.stdout.buffer.write(b'\\0'.join(map(os.fsencode, sys.argv[1:])))"
WATCHDOG = 120.0  # no test may hang: after this its SSH connection is cut


def _through_agent(
    transport: paramiko.Transport, command: GuestCommand, streams: HostStreams
) -> int:
    """run_in_guest's job done by an agent's exec server on `transport`, asked by the client."""
    directory = Path(tempfile.mkdtemp(prefix="pyd-exec-", dir="/tmp"))  # short: sun_path
    server = exec_server(directory / "sock" / "exec.sock", lambda: transport)
    server.start()
    try:
        code = run_through_agent(directory / "sock" / "exec.sock", command, streams)
    finally:
        server.close()
        shutil.rmtree(directory)
    assert code is not None, "the client found no agent"
    return code


@pytest.fixture(autouse=True, params=["direct", "agent", "framed"])
def path_taken(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which way the tests' `run_in_guest` goes (looked up at each call); "framed": through
    the agent with the streams as frames (PYD_EXEC_FRAMED=1), as on Windows."""
    if request.param in ("agent", "framed"):
        monkeypatch.setattr(sys.modules[__name__], "run_in_guest", _through_agent)
    if request.param == "framed":
        monkeypatch.setenv("PYD_EXEC_FRAMED", "1")
    return str(request.param)


@dataclass
class Outcome:
    code: int
    out: bytes
    err: bytes


def run(
    transport: paramiko.Transport,
    tmp_path: Path,
    *args: str,
    stdin: bytes = b"",
    workdir: str = "/",
    env: tuple[tuple[str, str], ...] = (),
    tool: Tool = DOCKER,
) -> Outcome:
    """Runs `docker ARGS` with stdin, stdout and stderr as files (no terminal)."""
    (tmp_path / "in").write_bytes(stdin)
    with (
        open(tmp_path / "in", "rb") as i,
        open(tmp_path / "out", "wb") as o,
        open(tmp_path / "err", "wb") as e,
    ):
        streams = HostStreams(i.fileno(), o.fileno(), e.fileno())
        code = run_in_guest(transport, GuestCommand(workdir, args, env, tool), streams)
    return Outcome(code, (tmp_path / "out").read_bytes(), (tmp_path / "err").read_bytes())


# -- exit codes, streams, stdin ------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 125, 126, 127, 255])
def test_exit_code_comes_back_exactly(
    transport: paramiko.Transport, tmp_path: Path, code: int
) -> None:
    assert run(transport, tmp_path, "sh", "-c", f"exit {code}").code == code


def test_a_signal_death_is_128_plus_the_signal_as_a_shell_says(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    assert run(transport, tmp_path, "sh", "-c", "kill -TERM $$").code == 128 + signal.SIGTERM


def test_stdout_and_stderr_stay_apart(transport: paramiko.Transport, tmp_path: Path) -> None:
    r = run(transport, tmp_path, "sh", "-c", "printf o1; printf e1 >&2; printf 'o2\\n'; exit 4")
    assert (r.code, r.out, r.err) == (4, b"o1o2\n", b"e1")


def test_50_mb_binary_round_trip_through_stdin_and_stdout(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    data = os.urandom(50 * 1024 * 1024)
    started = time.monotonic()
    r = run(transport, tmp_path, "cat", stdin=data)
    elapsed = time.monotonic() - started
    assert r.code == 0 and r.err == b""
    assert hashlib.sha256(r.out).hexdigest() == hashlib.sha256(data).hexdigest()
    # Per-byte or per-packet Python would take minutes; big reads take seconds.
    assert elapsed < 60, f"50 MB each way took {elapsed:.1f} s"


def test_the_end_of_stdin_reaches_the_command(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    """`cat` only ends, and the line after it only runs, when EOF arrives."""
    r = run(transport, tmp_path, "sh", "-c", "cat; echo after-eof >&2", stdin=b"abc")
    assert (r.code, r.out, r.err) == (0, b"abc", b"after-eof\n")


def test_stdin_from_a_pipe_that_closes_later(transport: paramiko.Transport, tmp_path: Path) -> None:
    """Input written while the command runs, piece by piece, each one passed on as it comes."""
    read_end, write_end = os.pipe()

    def feed() -> None:
        until(lambda: _holds(tmp_path / "err", b"started"), 30, what="the command starting")
        os.write(write_end, b"one ")
        until(lambda: _holds(tmp_path / "out", b"one "), 30, what="the first piece passed on")
        os.write(write_end, b"two")
        os.close(write_end)

    feeder = threading.Thread(target=feed)
    feeder.start()
    with open(tmp_path / "out", "wb") as o, open(tmp_path / "err", "wb") as e:
        code = run_in_guest(
            transport,
            GuestCommand("/", ("sh", "-c", "echo started >&2; cat; echo done")),
            HostStreams(read_end, o.fileno(), e.fileno()),
        )
    feeder.join()
    os.close(read_end)
    assert code == 0 and (tmp_path / "out").read_bytes() == b"one twodone\n"


def test_descriptors_above_selects_limit_work(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    """select() takes numbers below 1024 only; a long-running agent may be given higher."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        pytest.skip(f"open-file limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    (tmp_path / "in").write_bytes(b"high numbers")
    with (
        open(tmp_path / "in", "rb") as i,
        open(tmp_path / "out", "wb") as o,
        open(tmp_path / "err", "wb") as e,
    ):
        high = [os.dup2(f.fileno(), 2000 + n) for n, f in enumerate((i, o, e))]
        try:
            code = run_in_guest(transport, GuestCommand("/", ("cat",)), HostStreams(*high))
        finally:
            for fd in high:
                os.close(fd)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert code == 0 and (tmp_path / "out").read_bytes() == b"high numbers"


def test_a_terminal_on_stdin_alone_is_not_read(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    """Output to a file: no PTY, and the terminal's input is left for the shell, not sent
    (the command sees EOF at once, as with `ssh -n`)."""
    master, slave = pty.openpty()
    try:
        os.write(master, b"typed for the shell\n")
        with open(tmp_path / "out", "wb") as o, open(tmp_path / "err", "wb") as e:
            code = run_in_guest(
                transport,
                GuestCommand("/", ("sh", "-c", "cat; echo eof")),
                HostStreams(slave, o.fileno(), e.fileno()),
            )
        assert code == 0 and (tmp_path / "out").read_bytes() == b"eof\n"
        assert os.read(slave, 100) == b"typed for the shell\n"
    finally:
        os.close(master)
        os.close(slave)


def test_a_closed_output_ends_the_command_as_sigpipe_would(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `pyd docker save img | head -c 0`: the reader is gone
    try:
        with open(tmp_path / "err", "wb") as e, open(os.devnull, "rb") as i:
            code = run_in_guest(
                transport,
                GuestCommand("/", ("sh", "-c", "while :; do echo y; done")),
                HostStreams(i.fileno(), write_end, e.fileno()),
            )
    finally:
        os.close(write_end)
    assert code == OUTPUT_CLOSED


def test_a_session_without_exit_code_is_an_error(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    """The guest's shell itself killed: sshd has no exit code to send."""
    with pytest.raises(PydError, match="ended before docker did"):
        run(transport, tmp_path, "sh", "-c", "kill -KILL $PPID")


# -- the command line: arguments, environment, directory, compose --------------------------

WEIRD = [
    "",
    " ",
    "two words",
    "it's",
    '"double"',
    "new\nline",
    "tab\there",
    "é ü 漢字",
    "-n",
    "--help",
    "--",
    "-",
    "$HOME `id` $(id)",
    "*",
    "\\",
    "!event",
    "a=b",
    os.fsdecode(b"\xff\xfe raw bytes"),
]


@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_every_argument_arrives_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, shell: str
) -> None:
    if not shutil.which(shell):
        pytest.skip(f"no {shell}")
    with (
        running_guest(tmp_path_factory.mktemp("shell"), shell) as g,
        connected(g, WATCHDOG) as transport,
    ):
        r = run(transport, tmp_path, sys.executable, "-c", PRINT_ARGV, *WEIRD)
    assert r.code == 0, r.err
    assert r.out.split(b"\0") == [os.fsencode(a) for a in WEIRD]


def test_environment_variables_pass_with_their_exact_values(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    env = (("COMPOSE_X", ""), ("DOCKER_BUILDKIT", "1"), ("DOCKER_Y", "a 'b'\n\"c\" $HOME é"))
    show = "import os, sys; sys.stdout.write(repr([os.environ.get(k) for k in sys.argv[1:]]))"
    r = run(transport, tmp_path, sys.executable, "-c", show, *(k for k, _ in env), env=env)
    assert r.out.decode() == repr([v for _, v in env])


def test_the_command_runs_in_the_guest_directory(
    transport: paramiko.Transport, tmp_path: Path
) -> None:
    workdir = tmp_path / "it's a dir"
    workdir.mkdir()
    r = run(transport, tmp_path, "pwd", workdir=str(workdir))
    assert r.out == f"{workdir}\n".encode()


def test_a_missing_guest_directory_says_so(transport: paramiko.Transport, tmp_path: Path) -> None:
    r = run(transport, tmp_path, "true", workdir="/nonexistent/share")
    assert r.code == 1
    assert b"pyd: cannot enter /nonexistent/share in the guest" in r.err
    assert b"pyd mount ls" in r.err


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


def test_compose_runs_the_docker_compose_plugin(
    guest: Guest, transport: paramiko.Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "COMPOSE_PLUGIN_DIRS", (str(tmp_path / "none"),))
    # The fake docker runs `compose ARGS` as a command: this one says what it was given.
    made = [
        _script(guest.home / ".docker" / "cli-plugins" / "docker-compose", "exit 99"),
        _script(guest.bin / "compose", 'echo "plugin: $*"'),
    ]
    try:
        r = run(transport, tmp_path, "up", "-d", "it's", tool=COMPOSE)
    finally:
        for path in made:
            path.unlink()
    assert (r.code, r.out) == (0, b"plugin: up -d it's\n")


def test_compose_falls_back_to_standalone_docker_compose(
    guest: Guest, transport: paramiko.Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "COMPOSE_PLUGIN_DIRS", (str(tmp_path / "none"),))
    made = _script(guest.bin / "docker-compose", 'echo "standalone: $*"; exit 5')
    try:
        r = run(transport, tmp_path, "ps", tool=COMPOSE)
    finally:
        made.unlink()
    assert (r.code, r.out) == (5, b"standalone: ps\n")


def test_compose_missing_in_the_guest_fails_clearly(
    transport: paramiko.Transport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools, "COMPOSE_PLUGIN_DIRS", (str(tmp_path / "none"),))
    r = run(transport, tmp_path, "up", tool=COMPOSE)
    assert r.code == tools.NO_COMPOSE
    assert b"pyd: the guest has no Docker Compose" in r.err


# -- signals without a terminal ---------------------------------------------------------------


def _holds(path: Path, needle: bytes) -> bool:
    return path.exists() and needle in path.read_bytes()


def _when_output(path: Path, needle: bytes, then: Callable[[], None]) -> threading.Thread:
    def watch() -> None:
        until(lambda: _holds(path, needle), 30, 0.02, what=f"{needle!r} in {path.name}")
        then()

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_ctrl_c_reaches_docker_in_the_guest(transport: paramiko.Transport, tmp_path: Path) -> None:
    """SIGINT here (Ctrl-C in a terminal whose output is piped) is delivered to docker's
    process group in the guest; what docker makes of it is the exit code."""
    script = "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done"
    watcher = _when_output(tmp_path / "out", b"ready", lambda: os.kill(os.getpid(), signal.SIGINT))
    r = run(transport, tmp_path, "sh", "-c", script)
    watcher.join()
    assert (r.code, r.out) == (42, b"ready\ngot-int\n")


def test_sigterm_is_passed_on_too(transport: paramiko.Transport, tmp_path: Path) -> None:
    script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"
    watcher = _when_output(tmp_path / "out", b"ready", lambda: os.kill(os.getpid(), signal.SIGTERM))
    r = run(transport, tmp_path, "sh", "-c", script)
    watcher.join()
    assert (r.code, r.out) == (7, b"ready\ngot-term\n")


# -- a terminal: the host side is a pty from Python's pty module ------------------------------


class Terminal:
    """A host terminal for the runner: the runner gets the slave as stdin, stdout and stderr;
    the test types into the master and reads what the runner shows."""

    def __init__(self, columns: int = 101, rows: int = 33) -> None:
        self.master, self.slave = pty.openpty()
        self.resize(columns, rows)
        self.settings = termios.tcgetattr(self.slave)
        self.shown = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def resize(self, columns: int, rows: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            with self._changed:
                self.shown += data
                self._changed.notify_all()

    def wait_for(self, text: bytes, timeout: float = 30) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: text in self.shown, timeout):
                raise AssertionError(f"{text!r} never shown; the terminal shows {self.shown!r}")

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def streams(self) -> HostStreams:
        return HostStreams(self.slave, self.slave, self.slave)

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)
        self._reader.join(5)


@pytest.fixture
def term() -> Iterator[Terminal]:
    t = Terminal()
    yield t
    t.close()


def _in_background(steps: Callable[[], None]) -> Callable[[], None]:
    """Runs `steps` in a thread; the returned function joins it and re-raises its error."""
    failures: list[BaseException] = []

    def run_steps() -> None:
        try:
            steps()
        except BaseException as e:
            failures.append(e)

    t = threading.Thread(target=run_steps, daemon=True)
    t.start()

    def join() -> None:
        t.join(30)
        if failures:
            raise failures[0]

    return join


INTERACTIVE = (
    'echo "size $(stty size) term $TERM"; echo ready; read line; echo "got:$line"; sleep 30'
)


@pytest.mark.parametrize(("key", "signum"), [(b"\x03", signal.SIGINT), (b"\x1c", signal.SIGQUIT)])
def test_typed_input_and_ctrl_keys_reach_the_command_through_a_pty(
    guest: Guest,
    transport: paramiko.Transport,
    term: Terminal,
    monkeypatch: pytest.MonkeyPatch,
    key: bytes,
    signum: int,
) -> None:
    monkeypatch.setenv("TERM", "xterm-pyd-test")

    def steps() -> None:
        term.wait_for(b"ready")
        term.type(b"hello\r")
        term.wait_for(b"got:hello")
        term.type(key)  # Ctrl-C or Ctrl-\: the guest's PTY makes it a signal

    joined = _in_background(steps)
    code = run_in_guest(transport, GuestCommand("/", ("sh", "-c", INTERACTIVE)), term.streams())
    joined()
    assert code == 128 + signum
    assert b"size 33 101 term xterm-pyd-test" in term.shown
    assert termios.tcgetattr(term.slave) == term.settings  # raw mode is undone


def test_window_size_changes_reach_the_guest_pty(
    guest: Guest, transport: paramiko.Transport, term: Terminal
) -> None:
    script = 'echo ready; read line; echo "size $(stty size)"'

    def steps() -> None:
        term.wait_for(b"ready")
        term.resize(120, 40)
        os.kill(os.getpid(), signal.SIGWINCH)  # what the terminal does when resized
        assert guest.server.ptys[-1].resize_seen.wait(30)
        term.type(b"\r")

    joined = _in_background(steps)
    code = run_in_guest(transport, GuestCommand("/", ("sh", "-c", script)), term.streams())
    joined()
    assert code == 0
    # The last output may still be on its way from the PTY to the terminal's reader.
    term.wait_for(b"size 40 120")
    assert guest.server.ptys[-1].resized == [(120, 40)]


def test_the_terminal_is_restored_when_the_connection_breaks(guest: Guest, term: Terminal) -> None:
    client = guest.connect()
    transport = client.get_transport()
    assert transport is not None

    def steps() -> None:
        term.wait_for(b"ready")
        raw = termios.tcgetattr(term.slave)
        assert raw != term.settings  # raw mode while the command runs
        client.close()

    joined = _in_background(steps)
    with pytest.raises(PydError, match=r"SSH (session|connection)"):
        run_in_guest(transport, GuestCommand("/", ("sh", "-c", INTERACTIVE)), term.streams())
    joined()
    assert termios.tcgetattr(term.slave) == term.settings


def test_no_pty_unless_all_three_streams_are_terminals(
    transport: paramiko.Transport, term: Terminal, tmp_path: Path
) -> None:
    """`pyd docker ... 2>log`: stderr must reach the log, which a PTY would prevent."""
    with open(tmp_path / "err", "wb") as e, contextlib.suppress(OSError):
        code = run_in_guest(
            transport,
            GuestCommand("/", ("sh", "-c", "test -t 0 || test -t 1; echo $? >&2")),
            HostStreams(term.slave, term.slave, e.fileno()),
        )
    assert code == 0 and (tmp_path / "err").read_bytes() == b"1\n"


def test_a_terminal_that_hangs_up_ends_the_command_without_an_error(
    transport: paramiko.Transport,
) -> None:
    """The host's terminal window closed mid-command: found on a real guest, restoring its
    settings raised termios.error (EIO) and pyd died with a traceback."""
    t = Terminal()
    try:

        def steps() -> None:
            t.wait_for(b"ready")
            os.close(t.master)  # the terminal hangs up: its side reads and writes fail

        ticking = "echo ready; while :; do sleep 0.1; echo tick; done"
        joined = _in_background(steps)
        code = run_in_guest(transport, GuestCommand("/", ("sh", "-c", ticking)), t.streams())
        joined()
        assert code == OUTPUT_CLOSED  # the next output found nobody to show it to
    finally:
        os.close(t.slave)
        t._reader.join(5)
