"""The Docker socket forward without a VM: the relay between real sockets, real paramiko
channels (a paramiko server Transport in a thread over a socket pair, paramiko's own test
style), direct-streamlocal opens as an OpenSSH server parses them, and the host Unix socket's
safety rules."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

from pyd.errors import PydError
from pyd.relay.endpoint import docker_endpoint, make_docker_forward
from pyd.relay.named_pipe import pipe_name
from pyd.relay.pump import ChannelStream, Relay
from pyd.relay.unix_socket import MAX_PATH_BYTES, UnixSocketForward
from pyd.ssh.streamlocal import KIND, StreamLocalError, open_streamlocal
from tests.unit.forwardclients import close_under, pings_answered, settled_live_connections
from tests.unit.in_threads import run_in_threads
from tests.unit.polling import until
from tests.unit.sshserver import AllowAnyone, SSHServer, client_without_auth

EOF_MARK = b"<server saw EOF>"


# -- a guest-side echo service ------------------------------------------------------------


def echo_until_eof(conn: socket.socket | paramiko.Channel) -> None:
    """Echoes every chunk; after the client's EOF, answers EOF_MARK and closes. Only a relay
    that carries half-close lets the client see the mark."""
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
        conn.sendall(EOF_MARK)
    except (OSError, EOFError):
        pass  # the test dropped the connection (or its SSH transport) on purpose
    finally:
        # A paramiko channel's close() sends a message: EOFError once the test's transport
        # has gone (the test is over by then).
        with contextlib.suppress(OSError, EOFError):
            conn.close()


class SocketChannel:
    """A socket with the channel methods the relay uses: the guest side made of a socketpair."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, nbytes: int) -> bytes:
        return self.sock.recv(nbytes)

    def send(self, s: bytes) -> int:
        return self.sock.send(s)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        # Like Channel.close(), this wakes a thread blocked in recv (a bare close would not).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


# -- a paramiko SSH server in a thread -----------------------------------------------------


class _Server(AllowAnyone):
    """Connects streamlocal channels to the paths in `sockets` only; direct-tcpip anywhere."""

    def __init__(self, sockets: set[str]) -> None:
        self.sockets = sockets
        self.requested_path = ""  # set by _RecordingTransport for each streamlocal open

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == KIND and self.requested_path in self.sockets:
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_CONNECT_FAILED


class _RecordingTransport(paramiko.Transport):  # type: ignore[misc]
    """Reads a direct-streamlocal open the way OpenSSH's sshd does (channels.c): socket path,
    reserved string, reserved uint32, nothing after. paramiko's server skips those fields, so
    this test server parses and records them."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.opens: list[tuple[str, str, int, bytes]] = []

    def _parse_channel_open(self, m: paramiko.Message) -> None:
        probe = paramiko.Message(m.asbytes())  # the payload after the message type
        if probe.get_text() == KIND:
            for _ in range(3):  # sender channel, window, max packet
                probe.get_int()
            fields = (probe.get_text(), probe.get_text(), probe.get_int(), probe.get_remainder())
            self.opens.append(fields)
            self.server_object.requested_path = fields[0]
        super()._parse_channel_open(m)


class SSHPair:
    """A client Transport connected to an in-process server that echoes on every channel."""

    def __init__(self, sockets: set[str]) -> None:
        a, b = socket.socketpair()
        self.server = _RecordingTransport(b)
        self._ssh = SSHServer(self.server, _Server(sockets), echo_until_eof)
        self.client = client_without_auth(a, self._ssh)

    def tcp_channel(self) -> paramiko.Channel:
        return self.client.open_channel("direct-tcpip", ("echo", 7), ("127.0.0.1", 0))

    def close(self) -> None:
        self.client.close()
        self._ssh.close()


@pytest.fixture
def ssh_pair() -> Iterator[SSHPair]:
    pair = SSHPair({"/run/echo.sock"})
    yield pair
    pair.close()


# -- the relay ---------------------------------------------------------------------------


def run_relay_in_thread(host: socket.socket, chan: ChannelStream) -> threading.Thread:
    t = threading.Thread(target=Relay(host, chan).run, daemon=True)
    t.start()
    return t


def test_relay_carries_both_ways_and_half_close_between_real_sockets() -> None:
    client, host_end = socket.socketpair()
    guest_end, service = socket.socketpair()
    threading.Thread(target=echo_until_eof, args=(service,), daemon=True).start()
    t = run_relay_in_thread(host_end, SocketChannel(guest_end))

    payload = os.urandom(3 * 1024 * 1024)  # several relay buffers, both ways at once
    writer = threading.Thread(
        target=lambda: (client.sendall(payload), client.shutdown(socket.SHUT_WR))
    )
    writer.start()
    received = read_all(client)
    writer.join()
    t.join(10)

    assert received == payload + EOF_MARK
    assert not t.is_alive()
    assert host_end.fileno() == -1 and guest_end.fileno() == -1  # the relay closed both
    client.close()


def test_relay_over_a_paramiko_channel_keeps_half_close(ssh_pair: SSHPair) -> None:
    client, host_end = socket.socketpair()
    t = run_relay_in_thread(host_end, ssh_pair.tcp_channel())
    client.sendall(b"GET /_ping HTTP/1.1\r\n\r\n")
    client.shutdown(socket.SHUT_WR)
    assert read_all(client) == b"GET /_ping HTTP/1.1\r\n\r\n" + EOF_MARK
    t.join(10)
    assert not t.is_alive()


def test_relay_ends_when_the_guest_closes_the_channel_under_an_idle_client(
    ssh_pair: SSHPair,
) -> None:
    client, host_end = socket.socketpair()
    chan = ssh_pair.tcp_channel()
    t = run_relay_in_thread(host_end, chan)
    client.sendall(b"x")
    client.settimeout(10)
    assert client.recv(10) == b"x"
    ssh_pair.server.close()  # the guest goes away; the client never sends EOF
    t.join(10)
    assert not t.is_alive()
    assert client.recv(10) == b""  # the client is told, not left hanging


def test_relay_abort_ends_both_directions_at_once() -> None:
    client, host_end = socket.socketpair()
    guest_end, service = socket.socketpair()
    r = Relay(host_end, SocketChannel(guest_end))
    t = threading.Thread(target=r.run, daemon=True)
    t.start()
    # Stays a sleep: what is tested is an abort reaching both directions while they are
    # blocked in recv, a state no poll can observe from outside.
    time.sleep(0.05)
    r.abort()
    t.join(5)
    assert not t.is_alive()
    client.settimeout(5)
    service.settimeout(5)
    assert client.recv(1) == b"" and service.recv(1) == b""


def test_relay_reraises_a_bug_after_closing_both_ends() -> None:
    class Broken(SocketChannel):
        def send(self, s: bytes) -> int:
            raise ValueError("bug")

    client, host_end = socket.socketpair()
    guest_end, _service = socket.socketpair()
    client.sendall(b"data")
    with pytest.raises(ValueError, match="bug"):
        Relay(host_end, Broken(guest_end)).run()
    assert host_end.fileno() == -1 and guest_end.fileno() == -1


def test_idle_relays_use_no_cpu(ssh_pair: SSHPair) -> None:
    relays = []
    for _ in range(20):
        client, host_end = socket.socketpair()
        relays.append((client, run_relay_in_thread(host_end, ssh_pair.tcp_channel())))
    until(
        lambda: sum(t.name == "relay-in" for t in threading.enumerate()) == 20,
        5,
        what="both directions of every relay running",
    )
    before = time.process_time()
    time.sleep(1.0)  # the thing under test: CPU used while idle for a second
    used = time.process_time() - before
    # paramiko's own transport threads wake every 0.1 s (two transports here); 20 idle relays
    # must add nothing measurable on top.
    assert used < 0.05, f"{used:.3f} s of CPU in 1 s idle"
    for client, t in relays:
        client.close()
        t.join(5)
        assert not t.is_alive()


# -- direct-streamlocal ---------------------------------------------------------------------


def test_open_streamlocal_sends_the_socket_path_as_openssh_reads_it(ssh_pair: SSHPair) -> None:
    chan = open_streamlocal(ssh_pair.client, "/run/echo.sock")
    chan.sendall(b"ping")
    chan.shutdown_write()
    got = b""
    while data := chan.recv(1024):
        got += data
    assert got == b"ping" + EOF_MARK
    assert ssh_pair.server.opens == [("/run/echo.sock", "", 0, b"")]


def test_open_streamlocal_refused_names_the_socket(ssh_pair: SSHPair) -> None:
    with pytest.raises(StreamLocalError, match=r"/run/missing.sock") as e:
        open_streamlocal(ssh_pair.client, "/run/missing.sock")
    assert e.value.path == "/run/missing.sock"
    assert isinstance(e.value, PydError)
    # The connection survives a refusal.
    assert open_streamlocal(ssh_pair.client, "/run/echo.sock") is not None


def test_open_streamlocal_on_a_dead_connection_is_a_pyd_error(ssh_pair: SSHPair) -> None:
    ssh_pair.client.close()
    with pytest.raises(StreamLocalError, match="could not open"):
        open_streamlocal(ssh_pair.client, "/run/echo.sock")


def test_streamlocal_leaves_other_channel_opens_alone(ssh_pair: SSHPair) -> None:
    """Opens from many threads at once, of both kinds: each carries exactly its own fields."""
    errors: list[BaseException] = []

    def opener(i: int) -> None:
        try:
            for _ in range(5):
                if i % 2:
                    open_streamlocal(ssh_pair.client, "/run/echo.sock").close()
                else:
                    ssh_pair.tcp_channel().close()
        except BaseException as e:
            errors.append(e)

    run_in_threads(opener, [(i,) for i in range(8)], timeout=30)
    assert errors == []
    assert ssh_pair.server.opens == [("/run/echo.sock", "", 0, b"")] * 20


# -- the host Unix socket ---------------------------------------------------------------------


def channel_opener(ssh_pair: SSHPair) -> Callable[[], paramiko.Channel]:
    return lambda: open_streamlocal(ssh_pair.client, "/run/echo.sock")


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    return s


def test_forward_serves_0600_socket_in_0700_dir_and_relays(
    tmp_path: Path, ssh_pair: SSHPair
) -> None:
    path = tmp_path / "run" / "docker.sock"
    with UnixSocketForward(path, channel_opener(ssh_pair)):
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        with connect(path) as c:
            c.sendall(b"hello")
            c.shutdown(socket.SHUT_WR)
            assert read_all(c) == b"hello" + EOF_MARK
    assert not path.exists()


def test_forward_socket_is_0600_even_under_a_permissive_umask(
    tmp_path: Path, ssh_pair: SSHPair
) -> None:
    old = os.umask(0)
    try:
        fwd = UnixSocketForward(tmp_path / "d" / "docker.sock", channel_opener(ssh_pair))
        fwd.start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(fwd.path.lstat().st_mode) == 0o600
        assert stat.S_IMODE(fwd.path.parent.stat().st_mode) == 0o700
    finally:
        fwd.close()


def test_forward_refuses_a_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / ("d" * (MAX_PATH_BYTES + 1 - len(str(tmp_path)) - 1))
    assert len(str(path)) == MAX_PATH_BYTES + 1
    with pytest.raises(PydError, match="at most") as e:
        UnixSocketForward(path, lambda: None).start()
    assert "PYD_HOME" in e.value.hint
    assert not path.exists()


def test_forward_replaces_a_stale_socket(tmp_path: Path, ssh_pair: SSHPair) -> None:
    path = tmp_path / "docker.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nobody listens: what a crashed agent leaves
    with UnixSocketForward(path, channel_opener(ssh_pair)), connect(path) as c:
        c.sendall(b"x")
        c.shutdown(socket.SHUT_WR)
        assert read_all(c) == b"x" + EOF_MARK


def test_forward_refuses_a_socket_someone_answers_on(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(path))
        live.listen(1)
        with pytest.raises(PydError, match="already answers"):
            UnixSocketForward(path, lambda: None).start()
        assert stat.S_ISSOCK(path.lstat().st_mode)  # left alone


def test_forward_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    path.write_text("precious")
    with pytest.raises(PydError, match="not a socket"):
        UnixSocketForward(path, lambda: None).start()
    assert path.read_text() == "precious"


def test_forward_refuses_a_directory_others_can_enter(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    with pytest.raises(PydError, match="not private"):
        UnixSocketForward(shared / "docker.sock", lambda: None).start()


def test_forward_closes_the_client_when_no_channel_opens(
    tmp_path: Path, ssh_pair: SSHPair, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "docker.sock"

    def refused() -> paramiko.Channel:
        return open_streamlocal(ssh_pair.client, "/run/docker-not-running.sock")

    with (
        caplog.at_level(logging.WARNING, logger="pyd.relay"),
        UnixSocketForward(path, refused) as fwd,
        connect(path) as c,
    ):
        c.sendall(b"GET /_ping HTTP/1.1\r\n\r\n")
        # Closed with the request unread: a reset, or EOF; never an answer, never a hang.
        with contextlib.suppress(ConnectionResetError):
            assert read_all(c) == b""
        assert settled_live_connections(fwd) == 0
    assert any("docker-not-running.sock" in r.getMessage() for r in caplog.records)


def test_forward_close_ends_live_connections_and_leaks_nothing(
    tmp_path: Path, ssh_pair: SSHPair
) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    threads_before = threading.active_count()
    path = tmp_path / "docker.sock"
    fwd = UnixSocketForward(path, channel_opener(ssh_pair))
    fwd.start()
    clients = [connect(path) for _ in range(10)]
    assert pings_answered(clients) == [b"ping"] * 10
    assert fwd.live_connections() == 10
    assert close_under(fwd, clients) == [b""] * 10  # each told the connection ended
    assert fwd.live_connections() == 0
    assert not path.exists()
    # The server side's echo threads end once their channels close; give them a moment.
    until(lambda: threading.active_count() <= threads_before, 5, what="the threads ended")
    assert len(os.listdir("/proc/self/fd")) <= fds_before


def test_forward_uses_the_channel_opener_of_the_moment(tmp_path: Path) -> None:
    """After a reconnect the owner swaps the SSH connection: new connections follow it."""
    first, second = SSHPair({"/run/echo.sock"}), SSHPair({"/run/echo.sock"})
    current = [first]
    path = tmp_path / "docker.sock"
    try:
        with UnixSocketForward(path, lambda: open_streamlocal(current[0].client, "/run/echo.sock")):
            for pair in (first, second):
                current[0] = pair
                with connect(path) as c:
                    c.shutdown(socket.SHUT_WR)
                    assert read_all(c) == EOF_MARK
        assert len(first.server.opens) == 1 and len(second.server.opens) == 1
    finally:
        first.close()
        second.close()


# -- endpoints ------------------------------------------------------------------------------


def test_docker_endpoint_per_platform() -> None:
    assert docker_endpoint("default", Path("/h/.pyd/default/docker.sock"), "darwin") == (
        "unix:///h/.pyd/default/docker.sock"
    )
    assert docker_endpoint("dev", Path("/h/dev/docker.sock"), "linux") == (
        "unix:///h/dev/docker.sock"
    )
    assert docker_endpoint("dev", Path("C:/x/docker.sock"), "win32") == "npipe:////./pipe/pyd-dev"
    assert pipe_name("dev") == r"\\.\pipe\pyd-dev"


def test_make_docker_forward_picks_by_platform(tmp_path: Path) -> None:
    from pyd.relay.named_pipe import NamedPipeForward

    unix = make_docker_forward("dev", tmp_path / "docker.sock", lambda: None, platform="linux")
    pipe = make_docker_forward("dev", tmp_path / "docker.sock", lambda: None, platform="win32")
    assert isinstance(unix, UnixSocketForward)
    assert unix.endpoint == f"unix://{tmp_path}/docker.sock"
    assert isinstance(pipe, NamedPipeForward)
    assert pipe.endpoint == "npipe:////./pipe/pyd-dev"


def test_named_pipe_forward_refuses_to_start_off_windows() -> None:
    from pyd.relay.named_pipe import NamedPipeForward

    with pytest.raises(PydError, match="Windows"):
        NamedPipeForward("dev", lambda: None).start()
