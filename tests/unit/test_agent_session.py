"""The agent's SSH session (pyd.agent.session) as its users see it: transport() waits for a
reconnect and gives up on time, a link found dead is re-made, a changed host key is fatal,
a late verdict on an old link changes nothing, and close() ends everything without waiting
while join() waits for its threads. The stand-in guest (conftest: tests/unit/fakeguest.py)
behind a cuttable link (tests/unit/linkproxy.py); test_agent_link.py has the heartbeat's side."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import paramiko
import pytest

from pyd.agent.session import SSHDown, SSHSession
from pyd.errors import PydError
from pyd.host.threads import Deadline
from pyd.ssh.connect import HostKeyMismatchError, SSHTarget
from pyd.ssh.heartbeat import Heartbeat
from pyd.ssh.keys import generate_keypair
from tests.unit.fakeguest import Guest
from tests.unit.linkproxy import LinkProxy
from tests.unit.polling import until
from tests.unit.sshserver import host_keypair

INTERVAL, TIMEOUT = 0.05, 0.4  # a dead link noticed in half a second


def fast_heartbeat(transport: paramiko.Transport, on_dead: Callable[[str], None]) -> Heartbeat:
    return Heartbeat(transport, on_dead, interval=INTERVAL, timeout=TIMEOUT)


@pytest.fixture
def proxy(guest: Guest) -> Iterator[LinkProxy]:
    p = LinkProxy(guest.server.port)
    yield p
    p.close()


def target(guest: Guest, proxy: LinkProxy) -> SSHTarget:
    return SSHTarget("127.0.0.1", proxy.port, "root", guest.key, host_keypair().public_openssh)


@pytest.fixture
def session(guest: Guest, proxy: LinkProxy) -> Iterator[SSHSession]:
    s = SSHSession(target(guest, proxy), heartbeat=fast_heartbeat)
    s.connect(time.monotonic() + 10)
    yield s
    s.close()
    s.join(Deadline(5))


class Told:
    """What the session tells its owner through keep()'s callbacks."""

    def __init__(self) -> None:
        self.downs: list[str] = []
        self.ups: list[float] = []
        self.fatal: list[PydError] = []

    def keep(self, session: SSHSession) -> None:
        session.keep(self.downs.append, self.ups.append, self.fatal.append)


def session_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pyd-ssh-")]


def test_transport_waits_for_the_reconnect_and_returns_the_new_link(
    session: SSHSession, proxy: LinkProxy
) -> None:
    told = Told()
    told.keep(session)
    first = session.transport(0)
    proxy.cut()
    until(lambda: told.downs, 5, what="the drop noticed")
    threading.Timer(0.3, proxy.restore).start()
    t0 = time.monotonic()
    second = session.transport(5)  # waits, and returns as soon as the link is back
    assert time.monotonic() - t0 < 3
    assert second is not first and second.is_active()
    assert session.down_reason == "" and session.down_since == 0.0
    until(lambda: told.ups, 1, what="told it is back")  # told just after it is usable


def test_transport_gives_up_after_its_wait_and_says_why(
    session: SSHSession, proxy: LinkProxy
) -> None:
    Told().keep(session)
    proxy.cut()
    until(lambda: session.down_reason, 5, what="the drop noticed")
    assert session.down_since > 0
    t0 = time.monotonic()
    with pytest.raises(SSHDown, match="stopped answering"):
        session.transport(0.5)
    assert 0.45 < time.monotonic() - t0 < 1.5


def test_start_reconnects_without_telling_anyone(session: SSHSession, proxy: LinkProxy) -> None:
    session.start()
    first = session.transport(0)
    session.drop()
    assert not session.alive()
    assert session.transport(5) is not first


def test_a_late_verdict_on_an_old_link_changes_nothing(session: SSHSession) -> None:
    told = Told()
    told.keep(session)
    old = session.transport(0)
    session.drop()
    new = session.transport(5)
    session.link_dead(old, "the old link's heartbeat, late")
    assert session.alive() and session.transport(0) is new
    assert session.down_reason == ""
    assert told.downs == ["the connection was cut on purpose"]


def test_another_host_key_on_reconnect_is_fatal_and_ends_the_reconnecting(
    session: SSHSession,
) -> None:
    told = Told()
    told.keep(session)
    # As if another machine answered on the port: the key pinned is not the one presented.
    session.target = replace(
        session.target, host_public_key=generate_keypair("other").public_openssh
    )
    session.drop()
    until(lambda: told.fatal, 5, what="the mismatch reported")
    assert isinstance(told.fatal[0], HostKeyMismatchError)
    assert session.join(Deadline(2))  # the keeper has ended: nothing retries
    with pytest.raises(SSHDown):
        session.transport(0.1)


def test_close_returns_at_once_and_join_ends_every_thread(guest: Guest, proxy: LinkProxy) -> None:
    before = set(session_threads())
    s = SSHSession(target(guest, proxy), heartbeat=fast_heartbeat)
    s.connect(time.monotonic() + 10)
    s.keep(lambda r: None, lambda t: None, lambda e: None)
    proxy.cut(hold=True)  # a reconnect attempt that hangs: close() must not wait for it
    until(lambda: s.down_reason, 5, what="the drop noticed")
    waiting: list[BaseException] = []

    def wait_for_link() -> None:
        try:
            s.transport(60)
        except SSHDown as e:
            waiting.append(e)

    waiter = threading.Thread(target=wait_for_link)
    waiter.start()
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 0.1
    waiter.join(1)
    assert waiting, "a caller waiting for the link is let go at once"
    assert s.join(Deadline(2))
    assert set(session_threads()) <= before
    with pytest.raises(SSHDown):
        s.transport(10)  # at once: nothing will reconnect


def test_a_connect_that_ends_after_close_is_not_kept(guest: Guest, proxy: LinkProxy) -> None:
    s = SSHSession(target(guest, proxy), heartbeat=fast_heartbeat)

    def close_first() -> None:
        s.close()  # while connect() is on its way: the stop of an agent that boots

    with pytest.raises(SSHDown):
        s.connect(time.monotonic() + 10, close_first)
    assert not s.alive()


def test_an_attempt_whose_socket_comes_after_close_is_cut_at_once(
    guest: Guest, proxy: LinkProxy
) -> None:
    """close() (or retry_now()) between an attempt's TCP connect and the moment its socket is
    known: the attempt must not go on to a handshake nobody may answer for 10 s."""
    s = SSHSession(target(guest, proxy), heartbeat=fast_heartbeat)
    s.close()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        s._trying(ours)  # the reconnect loop's hook: it has its socket now
        theirs.settimeout(1)
        assert theirs.recv(1) == b""  # shut down: the handshake on it fails at once
