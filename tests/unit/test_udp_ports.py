"""Published UDP ports: the framing, the flow table and its expiry, and the host listener
relaying through the guest's real udp-relay (perl) over a real SSH exec channel."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import paramiko
import pytest

from pyd.host.threads import Deadline
from pyd.ports.forwards import Forward
from pyd.ports.listener import PortInUseError
from pyd.ports.udp_flows import FlowTable
from pyd.ports.udp_frames import HEADER, Frame, FrameKind, FrameReader, encode
from pyd.ports.udp_listener import UdpPortForward, bind_udp, open_udp_relay, relay_command
from tests.unit.fakeguest import connected, running_guest

RELAY = Path(__file__).parents[2] / "guest-image/overlay/usr/lib/pyd/udp-relay"

# --- framing --------------------------------------------------------------------------------


def test_frames_come_back_whole_whatever_pieces_the_stream_cuts() -> None:
    sent = [Frame(FrameKind.DATA, 7, b""), Frame(FrameKind.DATA, 2**32 - 1, os.urandom(65535))]
    sent += [Frame(FrameKind.CLOSE, 3), Frame(FrameKind.DATA, 1, b"x")]
    stream = b"".join(encode(f.kind, f.flow, f.payload) for f in sent)
    for piece in (1, 6, 7, 1000, len(stream)):
        reader = FrameReader()
        got: list[Frame] = []
        for i in range(0, len(stream), piece):
            got += reader.feed(stream[i : i + piece])
        assert got == sent
        assert reader.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    frame = encode(FrameKind.DATA, 5, b"hello")
    assert reader.feed(frame[:-1]) == []
    assert reader.pending == len(frame) - 1
    assert reader.feed(frame[-1:]) == [Frame(FrameKind.DATA, 5, b"hello")]


def test_an_unknown_kind_is_an_error_not_a_guess() -> None:
    with pytest.raises(ValueError, match="unknown UDP frame kind 9"):
        FrameReader().feed(HEADER.pack(9, 1, 0))


def test_a_datagram_too_big_for_a_frame_is_refused() -> None:
    with pytest.raises(ValueError, match="65536 bytes"):
        encode(FrameKind.DATA, 1, bytes(65536))


# --- flows ----------------------------------------------------------------------------------


def test_each_peer_gets_its_own_flow_and_keeps_it() -> None:
    flows = FlowTable(idle=60)
    a, new_a = flows.flow_for(("127.0.0.1", 1000), 0)
    b, new_b = flows.flow_for(("127.0.0.1", 1001), 0)
    again, new_again = flows.flow_for(("127.0.0.1", 1000), 1)
    assert (new_a, new_b, new_again) == (True, True, False)
    assert a != b and again == a
    assert flows.peer_of(b, 1) == ("127.0.0.1", 1001)


def test_a_quiet_flow_expires_and_its_id_is_never_reused() -> None:
    flows = FlowTable(idle=60)
    old, _ = flows.flow_for(("::1", 5), 0)
    assert flows.next_expiry(10) == 50
    assert flows.expire(59.9) == []
    assert flows.expire(60) == [old]
    assert flows.peer_of(old, 61) is None  # a late reply goes nowhere
    new, is_new = flows.flow_for(("::1", 5), 61)
    assert is_new and new != old
    assert flows.next_expiry(61) == 60


def test_traffic_either_way_keeps_a_flow_alive() -> None:
    flows = FlowTable(idle=60)
    asks, _ = flows.flow_for(("127.0.0.1", 1), 0)
    answered, _ = flows.flow_for(("127.0.0.1", 2), 0)
    flows.flow_for(("127.0.0.1", 1), 50)  # the peer sent again
    assert flows.peer_of(answered, 55) is not None  # a reply came
    assert flows.expire(100) == []
    assert flows.next_expiry(100) == 10  # the first, quiet since 50
    assert flows.expire(115) == [asks, answered]
    assert flows.next_expiry(115) is None and len(flows) == 0


def test_past_the_cap_the_least_recently_active_flow_makes_room() -> None:
    flows = FlowTable(idle=60, max_flows=2)
    first, _ = flows.flow_for(("127.0.0.1", 1), 0)
    second, _ = flows.flow_for(("127.0.0.1", 2), 1)
    flows.flow_for(("127.0.0.1", 1), 2)  # the first is active again
    assert flows.overflow() == []
    third, _ = flows.flow_for(("127.0.0.1", 3), 3)
    assert flows.overflow() == [second]
    assert flows.peer_of(second, 4) is None
    assert {flows.peer_of(f, 4) for f in (first, third)} == {("127.0.0.1", 1), ("127.0.0.1", 3)}


# --- binding --------------------------------------------------------------------------------


def test_a_taken_udp_port_is_a_clear_error() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    with (
        holder,
        pytest.raises(PortInUseError, match=rf"127.0.0.1:{port}/udp: it is already in use"),
    ):
        bind_udp("127.0.0.1", port)


def test_an_ipv6_wildcard_leaves_the_ipv4_side_free() -> None:
    v6 = bind_udp("::", 0)
    port = v6.getsockname()[1]
    with v6, bind_udp("0.0.0.0", port) as v4:  # without V6ONLY: PortInUseError
        assert v4.getsockname() == ("0.0.0.0", port)


def test_the_relay_command_quotes_the_target() -> None:
    f = Forward("::", 5353, 5353, "udp", "docker:abc/dns", guest_ip="::1")
    assert relay_command(f) == "/usr/lib/pyd/udp-relay ::1 5353"


# --- through the real relay -----------------------------------------------------------------


class Echo:
    """A UDP echo server on loopback that prefixes each reply with who sent it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.sources: set[tuple[str, int]] = set()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.sources.add(peer)
            self.sock.sendto(f"{peer[1]}:".encode() + data, peer)


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.sock.close()


@pytest.fixture
def transport(tmp_path: Path) -> Iterator[paramiko.Transport]:
    with running_guest(tmp_path) as guest, connected(guest, watchdog=60) as t:
        yield t


def _forward(echo: Echo, transport: paramiko.Transport, idle: float = 60) -> UdpPortForward:
    f = Forward("127.0.0.1", 0, echo.port, "udp", "docker:abc/echo")
    opener = partial(open_udp_relay, transport, timeout=10, relay=str(RELAY))
    fwd = UdpPortForward(f, opener, idle=idle)
    fwd.start()
    return fwd


def _client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.settimeout(10)
    return c


def _ask(client: socket.socket, address: tuple[str, int], data: bytes) -> bytes:
    client.sendto(data, address)
    reply, _ = client.recvfrom(70000)
    return reply


def test_datagrams_of_1_byte_to_60_kb_come_back_intact(
    echo: Echo, transport: paramiko.Transport
) -> None:
    fwd = _forward(echo, transport)
    try:
        with _client() as c:
            for size in (1, 1400, 9000, 60 * 1024):
                data = os.urandom(size)
                reply = _ask(c, fwd.address, data)
                assert reply.partition(b":")[2] == data
    finally:
        fwd.close()
        assert fwd.join(Deadline(5))


def test_two_clients_each_get_their_own_replies(echo: Echo, transport: paramiko.Transport) -> None:
    fwd = _forward(echo, transport)
    try:
        with _client() as a, _client() as b:
            a.sendto(b"from a", fwd.address)
            b.sendto(b"from b", fwd.address)
            reply_a, reply_b = a.recvfrom(100)[0], b.recvfrom(100)[0]
            assert reply_a.endswith(b"from a") and reply_b.endswith(b"from b")
            # The guest sends each client's datagrams from a socket of its own.
            assert reply_a.partition(b":")[0] != reply_b.partition(b":")[0]
            assert len(echo.sources) == 2
    finally:
        fwd.close()
        assert fwd.join(Deadline(5))


def test_a_burst_comes_back_whole(echo: Echo, transport: paramiko.Transport) -> None:
    fwd = _forward(echo, transport)
    try:
        with _client() as c:
            _ask(c, fwd.address, b"warm")  # the relay runs
            # 60: what the echo's and the client's default socket buffers hold at once
            sent = {os.urandom(8) + bytes(492) for _ in range(60)}
            for data in sent:
                c.sendto(data, fwd.address)
            got = {c.recvfrom(1000)[0].partition(b":")[2] for _ in sent}
            assert got == sent
    finally:
        fwd.close()
        assert fwd.join(Deadline(5))


def _relay_sockets(echo_port: int) -> int:
    """The sockets the udp-relay serving `echo_port` holds open (one per flow)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if str(RELAY).encode() in argv and str(echo_port).encode() in argv:
                links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
                return sum(link.startswith("socket:") for link in links)
        except OSError:
            continue
    raise AssertionError("no udp-relay process found")


def test_a_quiet_flow_expires_and_the_peer_gets_a_new_one(
    echo: Echo, transport: paramiko.Transport
) -> None:
    fwd = _forward(echo, transport, idle=0.3)
    try:
        with _client() as c:
            first = _ask(c, fwd.address, b"1").partition(b":")[0]
            assert fwd.flows == 1 and _relay_sockets(echo.port) == 1
            end = time.monotonic() + 5
            while (fwd.flows or _relay_sockets(echo.port)) and time.monotonic() < end:
                time.sleep(0.05)
            assert fwd.flows == 0
            assert _relay_sockets(echo.port) == 0  # the guest closed the flow's socket
            second = _ask(c, fwd.address, b"2").partition(b":")[0]
            assert second != first  # the guest closed the old flow's socket
    finally:
        fwd.close()
        assert fwd.join(Deadline(5))


def test_a_lost_channel_is_opened_again_by_the_next_datagram(
    echo: Echo, transport: paramiko.Transport
) -> None:
    opened: list[paramiko.Channel] = []

    def opener(f: Forward) -> paramiko.Channel:
        opened.append(open_udp_relay(transport, f, timeout=10, relay=str(RELAY)))
        return opened[-1]

    f = Forward("127.0.0.1", 0, echo.port, "udp", "docker:abc/echo")
    fwd = UdpPortForward(f, opener)
    fwd.start()
    try:
        with _client() as c:
            assert _ask(c, fwd.address, b"one").endswith(b"one")
            opened[0].close()  # as when the link drops
            end = time.monotonic() + 5
            while True:
                c.settimeout(0.5)
                try:
                    if _ask(c, fwd.address, b"two").endswith(b"two"):
                        break
                except TimeoutError:
                    pass
                assert time.monotonic() < end, "no reply after the channel was lost"
            assert len(opened) == 2
    finally:
        fwd.close()
        assert fwd.join(Deadline(5))


def test_an_unreachable_guest_loses_the_datagram_not_the_port(echo: Echo) -> None:
    attempts: list[Forward] = []

    def unreachable(f: Forward) -> paramiko.Channel:
        attempts.append(f)
        raise paramiko.SSHException("link down")

    fwd = UdpPortForward(Forward("127.0.0.1", 0, echo.port, "udp", "manual"), unreachable)
    fwd.start()
    try:
        with _client() as c:
            for _ in range(2):
                c.sendto(b"x", fwd.address)
            end = time.monotonic() + 5
            while len(attempts) < 2 and time.monotonic() < end:
                time.sleep(0.02)
            assert len(attempts) == 2  # each datagram tried again; the thread lives on
    finally:
        fwd.close()
        assert fwd.join(Deadline(5))
