"""The agent's SSH link heals by itself: a heartbeat that expects answers notices a dead link
in moments, the dead transport is closed (nothing waits on it), a fresh one is made as soon as
the link carries packets again, and a channel the server confirms after our open timed out is
closed rather than left open in the guest. Real paramiko on both ends, over loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import paramiko
import pytest

from pyd.agent.session import SSHDown, SSHSession
from pyd.errors import PydError
from pyd.host.threads import Deadline
from pyd.ssh.channel_open import late_opens_pending
from pyd.ssh.connect import SSHTarget
from pyd.ssh.direct_tcpip import DirectTcpipError, open_direct_tcpip
from pyd.ssh.heartbeat import Heartbeat
from tests.unit.fakeguest import Guest
from tests.unit.linkproxy import LinkProxy
from tests.unit.polling import until
from tests.unit.sshserver import AllowAnyone, SSHServer, client_without_auth, host_keypair

# Short beats: the logic is the same at 1 s / 3 s, the test just takes less time.
INTERVAL, TIMEOUT = 0.05, 0.4


def fast_heartbeat(transport: paramiko.Transport, on_dead: Callable[[str], None]) -> Heartbeat:
    return Heartbeat(transport, on_dead, interval=INTERVAL, timeout=TIMEOUT)


def run(transport: paramiko.Transport, command: str) -> bytes:
    chan = transport.open_session(timeout=10)
    chan.settimeout(10)
    chan.exec_command(command)
    out = b""
    while data := chan.recv(4096):
        out += data
    chan.close()
    return out


@pytest.fixture
def proxy(guest: Guest) -> Iterator[LinkProxy]:
    p = LinkProxy(guest.server.port)
    yield p
    p.close()


@pytest.fixture
def session(guest: Guest, proxy: LinkProxy) -> Iterator[SSHSession]:
    target = SSHTarget("127.0.0.1", proxy.port, "root", guest.key, host_keypair().public_openssh)
    s = SSHSession(target, heartbeat=fast_heartbeat)
    s.connect(time.monotonic() + 10)
    yield s
    s.close()


def test_heartbeat_keeps_a_live_link_and_stops_when_told(session: SSHSession) -> None:
    transport = session.transport(0)
    beat = Heartbeat(transport, lambda reason: pytest.fail(reason), INTERVAL, TIMEOUT)
    beat.start()
    until(lambda: beat.answered >= 5, 5)  # answers come: no verdict
    beat.close()
    assert beat.join(Deadline(5))  # both threads end while the link lives on
    assert transport.is_active()


def test_a_dropped_link_is_noticed_closed_and_remade(session: SSHSession, proxy: LinkProxy) -> None:
    downs: list[str] = []
    ups: list[float] = []
    session.keep(downs.append, ups.append, lambda e: pytest.fail(e.message))
    first = session.transport(0)
    assert run(first, "echo before") == b"before\n"

    proxy.cut()
    t0 = time.monotonic()
    until(lambda: downs, INTERVAL + TIMEOUT + 1)
    noticed = time.monotonic() - t0
    assert noticed < INTERVAL + TIMEOUT + 0.5
    assert "stopped answering" in downs[0]
    assert not first.is_active()  # closed: nothing waits on it any more
    assert not session.alive()
    assert 0 < session.down_for() < 1
    t0 = time.monotonic()
    with pytest.raises(SSHDown, match="stopped answering"):
        session.transport(0.2)
    assert time.monotonic() - t0 < 1  # callers are told at once, not after TCP's backoff

    until(lambda: proxy.turned_away >= 2, 5)  # an outage of a while: reconnects fail meanwhile
    assert ups == []
    proxy.restore()
    t0 = time.monotonic()
    until(lambda: ups, 5)
    back = time.monotonic() - t0
    assert back < 1.5  # the next attempt (every 0.5 s) gets through
    assert session.alive() and session.down_reason == "" and session.down_for() == 0
    second = session.transport(0)
    assert second is not first
    assert run(second, "echo after") == b"after\n"


def test_a_resumed_vm_gets_a_fresh_attempt_at_once(session: SSHSession, proxy: LinkProxy) -> None:
    """While paused, an attempt hangs on a connection the guest never answers; once it runs
    again, retry_now() drops that attempt for a fresh one instead of waiting out its 10 s."""
    downs: list[str] = []
    ups: list[float] = []
    session.keep(downs.append, ups.append, lambda e: pytest.fail(e.message))
    proxy.cut(hold=True)
    until(lambda: downs, 2)
    until(lambda: proxy.turned_away, 5)  # an attempt is under way, held
    proxy.restore()
    t0 = time.monotonic()
    session.retry_now()
    until(lambda: ups, 5)
    assert time.monotonic() - t0 < 1.5
    assert run(session.transport(0), "echo resumed") == b"resumed\n"


def test_a_connection_closed_by_the_guest_is_remade(session: SSHSession) -> None:
    downs: list[str] = []
    ups: list[float] = []
    session.keep(downs.append, ups.append, lambda e: pytest.fail(e.message))
    first = session.transport(0)
    first.sock.shutdown(socket.SHUT_RDWR)  # as when sshd or QEMU goes away
    until(lambda: downs, 2)
    assert "closed" in downs[0]
    until(lambda: ups, 3)
    assert run(session.transport(0), "echo again") == b"again\n"


def test_a_port_nobody_listens_on_any_more_is_told_apart(
    session: SSHSession, proxy: LinkProxy
) -> None:
    """QEMU gone: its port refuses; dropped packets or a paused VM never refuse."""
    session.keep(lambda r: None, lambda s: None, lambda e: None)
    proxy.cut()
    until(lambda: session.down_reason, 2)
    # Attempts made meanwhile (the first one's failure is seen once the second is made):
    until(lambda: proxy.turned_away >= 2, 5)
    assert not session.refused
    proxy.close()  # the listener too, as when QEMU dies
    until(lambda: session.refused, 2)
    t0 = time.monotonic()
    session.close()
    assert time.monotonic() - t0 < 0.5


def test_opens_waiting_on_a_dead_link_fail_when_it_is_noticed(
    session: SSHSession, proxy: LinkProxy
) -> None:
    session.keep(lambda r: None, lambda s: None, lambda e: None)
    transport = session.transport(0)
    proxy.cut()
    t0 = time.monotonic()
    with pytest.raises(DirectTcpipError):
        open_direct_tcpip(transport, ("127.0.0.1", 9), ("127.0.0.1", 1), timeout=60)
    assert time.monotonic() - t0 < INTERVAL + TIMEOUT + 1  # not the 60 s open timeout


# -- a channel confirmed late -------------------------------------------------------------


class _SlowOpens(AllowAnyone):
    """Confirms direct-tcpip opens after `delay` seconds (a guest too busy to answer)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        time.sleep(self.delay)  # the slowness under test
        return paramiko.OPEN_SUCCEEDED


def test_a_channel_confirmed_after_its_open_timed_out_is_closed() -> None:
    server_channels: list[paramiko.Channel] = []
    ended = threading.Event()

    def handle(chan: paramiko.Channel) -> None:
        server_channels.append(chan)
        chan.settimeout(10)
        try:
            chan.recv(1)  # b"" once the client closes it
        finally:
            ended.set()

    a, b = socket.socketpair()
    server = SSHServer(paramiko.Transport(b), _SlowOpens(0.5), handle)
    client = client_without_auth(a, server)
    try:
        with pytest.raises(PydError, match="Timeout"):
            open_direct_tcpip(client, ("127.0.0.1", 80), ("127.0.0.1", 1), timeout=0.1)
        # The server confirms it later: it is closed then, not left open in the guest.
        assert ended.wait(5)
        assert len(server_channels) == 1
        until(lambda: late_opens_pending() == 0, 2)
    finally:
        client.close()
        server.close()


class _BusyLink:
    """A transport whose keepalive replies never come while bytes keep arriving: the reply is
    stuck behind channel data, the link is alive. (Just what Heartbeat looks at.)"""

    def __init__(self) -> None:
        self.sock = type("Sock", (), {"last_recv": time.monotonic()})()
        self.feeding = True
        self._stop = threading.Event()
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        while not self._stop.wait(0.02):
            if self.feeding:
                self.sock.last_recv = time.monotonic()

    def is_active(self) -> bool:
        return True

    def global_request(self, kind: str, wait: bool) -> None:
        self._stop.wait()  # never answered

    def close(self) -> None:
        self._stop.set()


def test_bytes_arriving_keep_a_slow_link_alive_and_their_end_is_noticed() -> None:
    link = _BusyLink()
    dead: list[str] = []
    beat = Heartbeat(link, dead.append, INTERVAL, TIMEOUT)  # type: ignore[arg-type]
    try:
        beat.start()
        time.sleep(TIMEOUT * 3)  # under test: no verdict in three timeouts
        assert dead == []  # no reply, but data: alive
        link.feeding = False
        until(lambda: dead, TIMEOUT + 1)
        assert "stopped answering" in dead[0]
    finally:
        beat.close()
        link.close()
