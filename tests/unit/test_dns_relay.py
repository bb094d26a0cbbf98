"""The guest's DNS relay (guest-image/overlay/usr/lib/pyd/dns-relay, the real perl script)
with the agent's HostDns on its socket and a stand-in for QEMU's DNS, all on this host."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.dns import service
from pyd.dns.answer import Lookup, Outcome
from pyd.dns.service import HostDns
from pyd.dns.wire import NOERROR, NXDOMAIN, TYPE_A, TYPE_AAAA
from pyd.errors import PydError
from pyd.host.threads import Deadline

RELAY = Path(__file__).parents[2] / "guest-image/overlay/usr/lib/pyd/dns-relay"
pytestmark = pytest.mark.skipif(shutil.which("perl") is None, reason="needs perl")


def query(name: str, qtype: int = TYPE_A, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, 1)
    )


def parse(reply: bytes) -> tuple[int, int, list[bytes]]:
    """(id, rcode, the answers' rdata) of a reply to query()."""
    ident, flags, _qd, ancount, _ns, _ar = struct.unpack_from("!HHHHHH", reply)
    at = 12
    while reply[at]:
        at += reply[at] + 1
    at += 5
    rdatas = []
    for _ in range(ancount):
        at += 2  # the name's pointer
        _t, _c, _ttl, size = struct.unpack_from("!HHIH", reply, at)
        at += 10
        rdatas.append(reply[at : at + size])
        at += size
    return ident, flags & 0xF, rdatas


class FakeQemuDns:
    """QEMU's DNS: answers every A query with 10.9.9.9 and counts what it was asked."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.asked: list[bytes] = []
        self.tcp = socket.create_server(("127.0.0.1", self.port))  # DNS over TCP, same port
        threading.Thread(target=self._serve, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                size = struct.unpack("!H", conn.recv(2))[0]
                data = conn.recv(size)
                self.asked.append(data)
                reply = self._answer(data)
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            self.asked.append(data)
            self.sock.sendto(self._answer(data), peer)

    @staticmethod
    def _answer(data: bytes) -> bytes:
        ident, _f, _qd, _an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
        record = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("10.9.9.9")
        return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + data[12:] + record


class Relay:
    def __init__(self, tmp: Path, fallback: FakeQemuDns) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.socket_path = str(tmp / "dns.sock")
        env = {
            **os.environ,
            "PYD_DNS_SOCKET": self.socket_path,
            "PYD_DNS_PORT": str(self.port),
            "PYD_DNS_FALLBACK_PORT": str(fallback.port),
        }
        self.proc = subprocess.Popen(
            ["perl", str(RELAY), "127.0.0.1", "127.0.0.1", "10.0.2.2"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert "listening" in self.proc.stdout.readline()

    def ask(self, message: bytes, timeout: float = 5.0) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(message, ("127.0.0.1", self.port))
            return s.recv(4096)

    def connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.socket_path)
        return s

    def channel(self) -> Channel:
        return Channel(self.connect())


class Channel:
    """A socket closed as a paramiko Channel is: a reader blocked in recv() wakes."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.recv = sock.recv
        self.sendall = sock.sendall

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def fallback() -> FakeQemuDns:
    return FakeQemuDns()


@pytest.fixture
def relay(tmp_path: Path, fallback: FakeQemuDns) -> Iterator[Relay]:
    r = Relay(tmp_path, fallback)
    yield r
    r.proc.kill()
    r.proc.wait()
    fallback.sock.close()
    fallback.tcp.close()


def host_table(name: str) -> Lookup:
    """The host's resolver, as a table: one name only it knows, one slow name."""
    if name == "only.on.host":
        return Lookup(Outcome.FOUND, ("192.0.2.10", "2001:db8::10"))
    if name == "slow.on.host":
        time.sleep(1.6)
        return Lookup(Outcome.FOUND, ("192.0.2.11",))
    return Lookup(Outcome.NO_NAME)


def serving(relay: Relay) -> HostDns:
    dns = HostDns(relay.channel, host_table)
    dns.start()
    deadline = time.monotonic() + 5
    while parse(relay.ask(query("only.on.host")))[2] != [socket.inet_aton("192.0.2.10")]:
        assert time.monotonic() < deadline, "the agent never took over"
        time.sleep(0.05)
    return dns


def test_host_docker_internal_is_the_gateway_with_or_without_the_agent(relay: Relay) -> None:
    ident, rcode, rdatas = parse(relay.ask(query("Host.Docker.Internal", ident=7)))
    assert (ident, rcode, rdatas) == (7, NOERROR, [socket.inet_aton("10.0.2.2")])
    assert parse(relay.ask(query("gateway.docker.internal")))[2] == [socket.inet_aton("10.0.2.2")]
    # No IPv6 address reaches the host: an empty answer, not NXDOMAIN.
    assert parse(relay.ask(query("host.docker.internal", TYPE_AAAA)))[1:] == (NOERROR, [])


def test_without_an_agent_queries_go_to_qemus_dns(relay: Relay, fallback: FakeQemuDns) -> None:
    ident, rcode, rdatas = parse(relay.ask(query("only.on.host", ident=0x4321)))
    assert (ident, rcode, rdatas) == (0x4321, NOERROR, [socket.inet_aton("10.9.9.9")])
    assert len(fallback.asked) == 1


def test_the_agent_answers_a_and_aaaa_through_the_hosts_resolver(
    relay: Relay, fallback: FakeQemuDns
) -> None:
    dns = serving(relay)
    asked = len(fallback.asked)
    ident, rcode, rdatas = parse(relay.ask(query("only.on.host", TYPE_AAAA, ident=99)))
    assert (ident, rcode) == (99, NOERROR)
    assert rdatas == [socket.inet_pton(socket.AF_INET6, "2001:db8::10")]
    t0 = time.monotonic()
    assert parse(relay.ask(query("no.such.name")))[1] == NXDOMAIN
    assert time.monotonic() - t0 < 0.5  # at once, not a client's timeout
    # Other types still get answers: QEMU's DNS.
    assert parse(relay.ask(query("only.on.host", 15)))[1] == NOERROR
    assert len(fallback.asked) == asked + 1
    dns.close()
    assert dns.join(Deadline(2))


def test_a_slow_name_waits_for_the_agent_rather_than_falling_back(
    relay: Relay, fallback: FakeQemuDns
) -> None:
    """The relay probes a quiet agent; one that answers the probe is alive, and its answer
    for a name its resolver takes 1.6 s over is the one the client gets."""
    dns = serving(relay)
    asked = len(fallback.asked)
    assert parse(relay.ask(query("slow.on.host")))[2] == [socket.inet_aton("192.0.2.11")]
    assert len(fallback.asked) == asked
    dns.close()


def test_the_agent_gone_means_qemus_dns_at_once(relay: Relay) -> None:
    dns = serving(relay)
    dns.set_enabled(False)  # network.host_dns = false: the channel closes
    time.sleep(0.2)
    t0 = time.monotonic()
    assert parse(relay.ask(query("only.on.host")))[2] == [socket.inet_aton("10.9.9.9")]
    assert time.monotonic() - t0 < 0.5
    dns.set_enabled(True)  # and back
    deadline = time.monotonic() + 5
    while parse(relay.ask(query("only.on.host")))[2] != [socket.inet_aton("192.0.2.10")]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    dns.close()


def test_a_silent_agent_is_dropped_and_its_queries_answered_by_qemus_dns(relay: Relay) -> None:
    """A dead link's old connection stays open (sshd has not noticed): the probe goes
    unanswered, and the query is answered by QEMU's DNS within seconds."""
    silent = relay.connect()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert parse(relay.ask(query("only.on.host")))[2] == [socket.inet_aton("10.9.9.9")]
    assert time.monotonic() - t0 < 3.5
    t0 = time.monotonic()
    assert parse(relay.ask(query("only.on.host")))[2] == [socket.inet_aton("10.9.9.9")]
    assert time.monotonic() - t0 < 0.5  # dropped: the next is not held
    silent.close()


def test_dns_over_tcp_is_passed_to_qemus_dns(relay: Relay, fallback: FakeQemuDns) -> None:
    """A client's retry over TCP after a truncated answer (only QEMU's DNS truncates)."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
        message = query("big.txt.example", 16, ident=3)
        s.sendall(struct.pack("!H", len(message)) + message)
        size = struct.unpack("!H", s.recv(2))[0]
        reply = b""
        while len(reply) < size:
            reply += s.recv(size - len(reply))
    assert parse(reply)[:2] == (3, NOERROR)
    assert fallback.asked == [message]


def test_a_tcp_client_waiting_on_a_silent_qemu_dns_holds_up_no_udp_query(
    relay: Relay, fallback: FakeQemuDns
) -> None:
    """Connecting to a QEMU DNS that never answers waits up to 5 s: in a process of the
    pass-through's own, while the relay goes on answering UDP."""
    fallback.tcp.shutdown(socket.SHUT_RDWR)  # wakes its accept(), which lets go of the port
    fallback.tcp.close()
    silent = socket.socket()  # its accept queue full, so SYNs go unanswered
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", fallback.port))
    silent.listen(0)
    queued = [socket.create_connection(("127.0.0.1", fallback.port))]  # the one it holds
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            message = query("big.txt.example", 16, ident=5)
            s.sendall(struct.pack("!H", len(message)) + message)
            time.sleep(0.3)  # the relay has accepted it and is connecting onwards
            started = time.monotonic()
            ident, rcode, _ = parse(relay.ask(query("udp.example", ident=6), timeout=3))
            assert (ident, rcode) == (6, NOERROR) and time.monotonic() - started < 1.5
    finally:
        for q in queued:
            q.close()
        silent.close()


def test_failed_attempts_back_off_and_stop_while_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An image without the relay refuses every channel: the agent asks less and less often
    (not 10 times a second for ever), and not at all while network.host_dns is false."""
    monkeypatch.setattr(service, "RETRY", 0.05)
    monkeypatch.setattr(service, "MAX_RETRY", 0.4)
    tries: list[float] = []

    def refuse() -> Channel:
        tries.append(time.monotonic())
        raise PydError("open failed: connect failed")

    dns = HostDns(refuse, host_table)
    dns.start()
    time.sleep(1.5)  # 0.05 + 0.1 + 0.2 + 0.4 + 0.4 ...: 6 or 7 tries, not 30
    assert 4 <= len(tries) <= 8, tries
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert gaps[-1] > 3 * gaps[0]
    dns.set_enabled(False)
    time.sleep(0.5)
    asked = len(tries)
    time.sleep(1.0)
    assert len(tries) == asked
    dns.close()
    assert dns.join(Deadline(2))
