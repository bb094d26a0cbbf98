"""Published-port forwards without a VM: real host sockets, real paramiko channels (a paramiko
server Transport in a thread, connecting each direct-tcpip channel to a local echo service as
the guest's sshd would), and the listener's binding rules."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pyd.errors import PydError
from pyd.ports.forwards import Forward
from pyd.ports.holder import listening_inodes, parse_lsof, port_holder
from pyd.ports.listener import (
    PortBindError,
    PortInUseError,
    TcpPortForward,
    bind_error,
    bind_listener,
)
from pyd.relay.pump import Relay
from pyd.ssh.connect import SSHTarget, connect
from pyd.ssh.direct_tcpip import DirectTcpipError, open_direct_tcpip
from pyd.ssh.keys import generate_keypair, write_private
from tests.unit.forwardclients import close_under, pings_answered, settled_live_connections
from tests.unit.in_threads import run_in_threads
from tests.unit.listening import accept_each, nobody_listens
from tests.unit.sshserver import AllowAnyone, SSHServer, client_without_auth, host_keypair

EOF_MARK = b"<echo saw EOF>"
LINUX = sys.platform.startswith("linux")


# -- the guest side: an echo service, and an SSH server that dials it ------------------------


class EchoServer:
    """Echoes each connection until the client's EOF, then sends EOF_MARK and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        accept_each(self.sock, self._start_echo)

    def _start_echo(self, conn: socket.socket) -> None:
        threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.sendall(EOF_MARK)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


class _Server(AllowAnyone):
    """Allows direct-tcpip to the ports in `allowed` and records each open."""

    def __init__(self, allowed: set[int]) -> None:
        self.allowed = allowed
        self.opens: dict[int, tuple[tuple[str, int], tuple[str, int]]] = {}

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if destination[1] not in self.allowed:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.opens[chanid] = (origin, destination)
        return paramiko.OPEN_SUCCEEDED


class Guest:
    """A client Transport to an in-process SSH server (over loopback TCP) that connects
    direct-tcpip channels to real sockets on this host, relaying them like sshd does. The
    client is a bare paramiko Transport, or with `key_dir` the one pyd's own connect() makes
    (pinned host key, client key, pyd's algorithms and socket)."""

    def __init__(self, allowed: set[int], key_dir: Path | None = None) -> None:
        self.server_interface = _Server(allowed)
        self.ssh_client: paramiko.SSHClient | None = None
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(10)
            port = listener.getsockname()[1]
            if key_dir is None:
                a = socket.create_connection(("127.0.0.1", port))
                self.ssh = self._serve(listener.accept()[0])
                self.client = client_without_auth(a, self.ssh)
            else:
                key = key_dir / "id_ed25519"
                write_private(key, generate_keypair("test-client").private_openssh)
                host_key = host_keypair().public_openssh
                target = SSHTarget("127.0.0.1", port, "root", key, host_key)
                done: list[paramiko.SSHClient] = []
                connecting = threading.Thread(target=lambda: done.append(connect(target)))
                connecting.start()  # connect() returns once the server below has answered
                self.ssh = self._serve(listener.accept()[0])
                connecting.join(30)
                self.ssh_client = done[0]
                self.client = self.ssh_client.get_transport()

    def _serve(self, sock: socket.socket) -> SSHServer:
        return SSHServer(paramiko.Transport(sock), self.server_interface, self._dial)

    def _dial(self, chan: paramiko.Channel) -> None:
        _origin, destination = self.server_interface.opens[chan.get_id()]
        try:
            sock = socket.create_connection(destination, timeout=10)
        except OSError:
            chan.close()
            return
        sock.settimeout(None)
        Relay(sock, chan, name="test-guest").run()

    def open_channel(self, f: Forward, origin: tuple[str, int]) -> paramiko.Channel:
        return open_direct_tcpip(self.client, (f.guest_ip, f.guest_port), origin)

    def origins(self) -> list[tuple[str, int]]:
        return [origin for origin, _ in self.server_interface.opens.values()]

    def close(self) -> None:
        if self.ssh_client is not None:
            self.ssh_client.close()
        self.client.close()
        self.ssh.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def guest(echo: EchoServer) -> Iterator[Guest]:
    g = Guest({echo.port})
    yield g
    g.close()


def forward_to(echo: EchoServer, host_ip: str = "127.0.0.1", host_port: int = 0) -> Forward:
    return Forward(host_ip, host_port, echo.port, "tcp", "manual")


def exchange(address: tuple[str, int], payload: bytes, timeout: float = 30) -> bytes:
    """Sends `payload` while reading the answer, half-closes, returns all that came back."""
    with socket.create_connection(address, timeout=timeout) as s:

        def send() -> None:
            with contextlib.suppress(OSError):
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=send)
        writer.start()
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
        writer.join()
    return b"".join(chunks)


def ipv6_loopback_works() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- relaying ----------------------------------------------------------------------------------


def test_forward_carries_a_connection_to_the_guest_port_with_half_close(
    echo: EchoServer, guest: Guest
) -> None:
    with TcpPortForward(forward_to(echo), guest.open_channel) as fwd:
        assert exchange(fwd.address, b"GET / HTTP/1.0\r\n\r\n") == (
            b"GET / HTTP/1.0\r\n\r\n" + EOF_MARK
        )


def test_forward_dials_the_guest_address_and_names_the_peer_as_origin(
    echo: EchoServer, guest: Guest
) -> None:
    fwd = TcpPortForward(forward_to(echo), guest.open_channel)
    with fwd, socket.create_connection(fwd.address, timeout=10) as s:
        peer = s.getsockname()
        s.shutdown(socket.SHUT_WR)
        assert s.recv(100) == EOF_MARK
    [(origin, destination)] = guest.server_interface.opens.values()
    assert destination == ("127.0.0.1", echo.port)
    assert origin == (peer[0], peer[1])


def test_one_hundred_concurrent_connections_all_arrive_intact(
    echo: EchoServer, guest: Guest
) -> None:
    failures: list[str] = []
    start = threading.Barrier(100)

    def client(fwd: TcpPortForward) -> None:
        payload = os.urandom(64 * 1024)
        try:
            start.wait(30)
            got = exchange(fwd.address, payload, timeout=60)
            if got != payload + EOF_MARK:
                failures.append(f"{len(got)} bytes back, not the {len(payload)} sent")
        except Exception as e:
            failures.append(repr(e))

    with TcpPortForward(forward_to(echo), guest.open_channel) as fwd:
        run_in_threads(client, [(fwd,)] * 100, timeout=120)
    assert failures == []
    assert len(guest.origins()) == 100


def test_large_transfers_both_ways_over_pyds_own_ssh_connection(
    echo: EchoServer, tmp_path: Path
) -> None:
    """pyd.ssh.connect's socket (read ahead, woken per packet) and algorithms under a load of
    parallel connections of mixed sizes: every byte arrives, in order."""
    g = Guest({echo.port}, key_dir=tmp_path)
    try:
        assert g.client.remote_cipher == "aes128-ctr"
        assert g.client.remote_mac == "hmac-sha2-512-etm@openssh.com"
        sizes = [1, 15, 16, 17, 1000, 32 * 1024 - 1, 32 * 1024 + 1, 300 * 1000, 3 * 1024 * 1024]
        results: dict[int, bool] = {}

        def client(fwd: TcpPortForward, size: int) -> None:
            payload = os.urandom(size)
            results[size] = exchange(fwd.address, payload, timeout=60) == payload + EOF_MARK

        with TcpPortForward(forward_to(echo), g.open_channel) as fwd:
            run_in_threads(client, [(fwd, n) for n in sizes], timeout=120)
        assert results == dict.fromkeys(sizes, True)
    finally:
        g.close()


def test_a_connection_the_guest_refuses_is_closed_not_left_hanging(
    echo: EchoServer, guest: Guest
) -> None:
    nowhere = Forward("127.0.0.1", 0, 9, "tcp", "manual")  # nothing allowed on port 9
    with TcpPortForward(nowhere, guest.open_channel) as fwd:
        with socket.create_connection(fwd.address, timeout=10) as s:
            s.sendall(b"hello")
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
        assert settled_live_connections(fwd) == 0


def test_close_stops_listening_and_ends_live_connections(echo: EchoServer, guest: Guest) -> None:
    fwd = TcpPortForward(forward_to(echo), guest.open_channel)
    fwd.start()
    address = fwd.address
    clients = [socket.create_connection(address, timeout=10) for _ in range(5)]
    assert pings_answered(clients) == [b"ping"] * 5
    assert fwd.live_connections() == 5
    assert close_under(fwd, clients) == [b""] * 5  # each told the connection ended
    assert fwd.live_connections() == 0
    assert nobody_listens(address)


def test_new_connections_follow_the_channel_opener_of_the_moment(echo: EchoServer) -> None:
    """After a reconnect the owner swaps the SSH connection: new connections use it."""
    first, second = Guest({echo.port}), Guest({echo.port})
    current = [first]
    try:
        with TcpPortForward(forward_to(echo), lambda f, o: current[0].open_channel(f, o)) as fwd:
            for g in (first, second):
                current[0] = g
                assert exchange(fwd.address, b"x") == b"x" + EOF_MARK
        assert len(first.origins()) == 1 and len(second.origins()) == 1
    finally:
        first.close()
        second.close()


# -- the listener ----------------------------------------------------------------------------


def test_listener_binds_only_the_requested_address(echo: EchoServer, guest: Guest) -> None:
    with TcpPortForward(forward_to(echo, "127.0.0.1"), guest.open_channel) as fwd:
        host, port = fwd.address
        assert host == "127.0.0.1"
        if LINUX:  # all of 127/8 is this host's loopback: another address on it stays closed
            assert nobody_listens(("127.0.0.2", port))
        assert exchange(("127.0.0.1", port), b"y") == b"y" + EOF_MARK


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 on this host")
def test_ipv6_listener_is_v6only_and_leaves_ipv4_to_another_forward(
    echo: EchoServer, guest: Guest
) -> None:
    with TcpPortForward(forward_to(echo, "::"), guest.open_channel) as v6:
        port = v6.address[1]
        listener = v6._listener
        assert listener is not None
        assert listener.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert nobody_listens(("127.0.0.1", port))  # the IPv4 side is not taken by "::"
        with TcpPortForward(forward_to(echo, "0.0.0.0", port), guest.open_channel):
            assert exchange(("::1", port), b"6") == b"6" + EOF_MARK
            assert exchange(("127.0.0.1", port), b"4") == b"4" + EOF_MARK


@pytest.fixture
def foreign_listener() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Another process listening on 127.0.0.1 (what a user's nginx would be)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys\n"
            "s = socket.create_server(('127.0.0.1', 0))\n"
            "print(s.getsockname()[1], flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    yield proc, port
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(10)


def test_a_taken_port_is_port_in_use_naming_the_holder(
    foreign_listener: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = foreign_listener
    fwd = TcpPortForward(Forward("127.0.0.1", port, 80, "tcp", "manual"), lambda f, o: None)
    with pytest.raises(PortInUseError) as e:
        fwd.start()
    assert isinstance(e.value, PydError)
    assert f"127.0.0.1:{port}" in e.value.message
    assert e.value.address == ("127.0.0.1", port)
    if LINUX:
        assert e.value.holder is not None
        assert e.value.holder.startswith(f"pid {proc.pid} (")
        assert f"by pid {proc.pid} (" in e.value.message
    assert "another host port" in e.value.hint


@pytest.mark.skipif(not LINUX, reason="Linux refuses a wildcard next to a specific listener")
def test_a_wildcard_clashing_with_a_specific_listener_names_its_holder(
    foreign_listener: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = foreign_listener
    with pytest.raises(PortInUseError, match=rf"0\.0\.0\.0:{port}.*pid {proc.pid} \("):
        bind_listener("0.0.0.0", port)


def test_macos_rules_never_bind_beside_a_live_listener(
    foreign_listener: tuple[subprocess.Popen[str], int],
) -> None:
    """On macOS SO_REUSEADDR would let 127.0.0.1 be bound beside another program's wildcard
    listener; the darwin path tries without it and names the holder instead."""
    proc, port = foreign_listener
    with pytest.raises(PortInUseError) as e:
        bind_listener("127.0.0.1", port, platform="darwin")
    if LINUX:  # port_holder looks it up with this host's own means
        assert e.value.holder is not None and e.value.holder.startswith(f"pid {proc.pid} (")


def _port_in_time_wait() -> int:
    """A port whose listener is gone but whose last connection lingers in TIME_WAIT on it
    (the server closed first): what an agent restarted at once finds."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the active close: TIME_WAIT stays with 127.0.0.1:port
        client.recv(1)
        client.close()
    return port


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_a_port_left_in_time_wait_is_bound_again(platform: str) -> None:
    port = _port_in_time_wait()
    with bind_listener("127.0.0.1", port, platform=platform) as sock:
        assert sock.getsockname() == ("127.0.0.1", port)


def test_an_address_not_of_this_host_is_a_bind_error() -> None:
    with pytest.raises(PortBindError, match="not an address of this host"):
        bind_listener("192.0.2.1", 0)  # TEST-NET-1: never assigned to a real host


def test_privileged_port_denied_explains_what_to_do_per_platform() -> None:
    denied = OSError(errno.EACCES, "Permission denied")
    linux = bind_error(("127.0.0.1", 80), denied, "linux")
    assert "127.0.0.1:80" in linux.message and "permission denied" in linux.message
    assert "ip_unprivileged_port_start=80" in linux.hint and "root" in linux.hint
    mac = bind_error(("127.0.0.1", 80), denied, "darwin")
    assert "0.0.0.0:80" in mac.hint and "root" in mac.hint
    assert bind_error(("127.0.0.1", 8080), denied, "linux").hint == ""


# -- direct-tcpip -----------------------------------------------------------------------------


def test_open_direct_tcpip_refused_names_the_guest_address(guest: Guest) -> None:
    with pytest.raises(DirectTcpipError, match=r"refused a connection to 127\.0\.0\.1:9\b") as e:
        open_direct_tcpip(guest.client, ("127.0.0.1", 9), ("127.0.0.1", 50000))
    assert e.value.guest == ("127.0.0.1", 9)
    with pytest.raises(DirectTcpipError, match=r"\[::1\]:9\b"):
        open_direct_tcpip(guest.client, ("::1", 9), ("::1", 50000))


def test_open_direct_tcpip_on_a_dead_connection_is_a_pyd_error(guest: Guest) -> None:
    guest.client.close()
    with pytest.raises(DirectTcpipError, match="could not open an SSH channel"):
        open_direct_tcpip(guest.client, ("127.0.0.1", 80), ("127.0.0.1", 50000))


# -- who holds a port --------------------------------------------------------------------------


def _proc_net_line(addr_hex: str, port: int, state: str, inode: int) -> str:
    return (
        f"   0: {addr_hex}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 "
        f"00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
    )


def test_listening_inodes_ranks_the_exact_address_then_wildcards(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt ..."
    loopback = "0100007F" if sys.byteorder == "little" else "7F000001"
    (net / "tcp").write_text(
        "\n".join(
            [
                header,
                _proc_net_line("00000000", 8080, "0A", 111),  # 0.0.0.0:8080
                _proc_net_line(loopback, 8080, "0A", 222),  # 127.0.0.1:8080
                _proc_net_line(loopback, 8080, "01", 333),  # established, not a listener
                _proc_net_line(loopback, 9090, "0A", 444),  # another port
            ]
        )
    )
    (net / "tcp6").write_text(header + "\n" + _proc_net_line("0" * 32, 8080, "0A", 555))
    assert listening_inodes(tmp_path, "127.0.0.1", 8080) == [222, 111, 555]
    assert listening_inodes(tmp_path, "::", 8080)[0] in (111, 555)
    assert listening_inodes(tmp_path, "127.0.0.1", 7070) == []


def test_port_holder_of_a_free_port_is_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: nobody holds a listener there
    assert port_holder("127.0.0.1", port) is None


def test_parse_lsof_reads_the_first_process() -> None:
    assert parse_lsof("p4242\ncnginx\nf6\np99\ncother\n") == "pid 4242 (nginx)"
    assert parse_lsof("p4242\n") == "pid 4242"
    assert parse_lsof("") is None
