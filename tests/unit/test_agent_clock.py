"""The guest's clock kept on the host's (pyd.agent.clock): the offset from bracketed samples,
the step decision, the wake detector on injected host clocks (Linux and macOS, where monotonic
time stops in sleep, and Windows, where it does not), the guest's loop run by a real bash (a
stand-in `date` records the step instead of setting this machine's clock), a sync over a real
SSH link to the stand-in guest (tests/unit/fakeguest.py) whose `bash` keeps a clock of its own,
and the keeper deciding when to sync."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from pyd.agent import clock
from pyd.agent.clock import (
    ClockKeeper,
    Decision,
    Estimate,
    HostTime,
    Sample,
    Synced,
    decide,
    estimate,
    host_wake,
    parse_time,
    step_line,
    sync,
)
from pyd.agent.session import SSHDown, SSHSession
from pyd.host.threads import Deadline
from pyd.ssh.connect import SSHTarget
from pyd.ssh.link_errors import LINK_ERRORS
from tests.unit.fakeguest import Guest
from tests.unit.linkproxy import LinkProxy
from tests.unit.polling import until
from tests.unit.sshserver import host_keypair

# -- offset, decision, step ------------------------------------------------------------------


def test_the_offset_comes_from_the_shortest_round_trip() -> None:
    samples = [
        Sample(before=100.0, guest=40.5, after=101.0),  # bash starting: 1 s round trip
        Sample(before=101.0, guest=41.05, after=101.1),
        Sample(before=101.2, guest=41.202, after=101.204),  # the best: 4 ms
        Sample(before=101.3, guest=41.4, after=101.35),
    ]
    found = estimate(samples)
    assert found is not None
    assert found.offset == pytest.approx(41.202 - 101.202)
    assert found.error == pytest.approx(0.002)
    assert found.describe() == "60.0 s behind"
    assert estimate([]) is None


@pytest.mark.parametrize(
    ("offset", "error", "decision"),
    [
        (0.0, 0.001, Decision.IN_SYNC),
        (0.099, 0.002, Decision.IN_SYNC),
        (-0.1, 0.002, Decision.IN_SYNC),  # exactly the threshold: left alone
        (0.101, 0.002, Decision.STEP),
        (-60.2, 0.003, Decision.STEP),
        (0.15, 0.05, Decision.STEP),  # error at the bound: trusted
        (0.15, 0.08, Decision.UNTRUSTED),  # could be 0.07: not worth a step
        (0.02, 0.3, Decision.UNTRUSTED),  # cannot tell at all
        (-60.0, 0.4, Decision.STEP),  # a slow link, but a step brings it within 0.4 s of 60
    ],
)
def test_the_step_decision(offset: float, error: float, decision: Decision) -> None:
    assert decide(Estimate(offset, error)) is decision


def test_the_step_line_moves_the_guest_onto_the_host() -> None:
    assert step_line(Estimate(-60.2, 0.001)) == "+60.200000"
    assert step_line(Estimate(0.25, 0.001)) == "-0.250000"
    assert step_line(Estimate(-0.0000004, 0.001)) == "+0.000000"
    assert Estimate(0.004, 0.001).describe() == "0.004 s ahead"


def test_the_guest_s_answers_are_parsed() -> None:
    assert parse_time("t 1796340187.751663\n") == pytest.approx(1796340187.751663)
    assert parse_time("t 1796340187,751663") == pytest.approx(1796340187.751663)
    with pytest.raises(ValueError, match="not a time"):
        parse_time("s ok")
    with pytest.raises(ValueError):
        parse_time("t soon")


# -- the host's wake -------------------------------------------------------------------------


def test_nothing_happened() -> None:
    before = HostTime(wall=1000.0, mono=50.0)
    assert host_wake(before, HostTime(1001.002, 51.0), waited=1.0) == ""
    assert host_wake(before, HostTime(1000.3, 50.3), waited=1.0) == ""  # woken early (asked)
    assert host_wake(before, HostTime(1003.0, 53.0), waited=1.0) == ""  # a busy host: late


def test_a_sleep_on_linux_or_macos_shows_as_a_jump() -> None:
    """Monotonic time stops while the host sleeps; wall-clock time does not."""
    before = HostTime(wall=1000.0, mono=50.0)
    woke = host_wake(before, HostTime(wall=1061.0, mono=51.0), waited=1.0)
    assert woke == "the host's clock jumped 60.0 s ahead (the host slept or was set)"


def test_a_wall_clock_set_back_shows_as_a_jump() -> None:
    before = HostTime(wall=1000.0, mono=50.0)
    woke = host_wake(before, HostTime(wall=999.0, mono=51.0), waited=1.0)
    assert woke == "the host's clock jumped 2.0 s back (the host slept or was set)"


def test_a_sleep_on_windows_shows_as_a_gap() -> None:
    """There monotonic time counts the sleep too: both clocks moved by it, far beyond the
    wait."""
    before = HostTime(wall=1000.0, mono=50.0)
    woke = host_wake(before, HostTime(wall=1061.0, mono=111.0), waited=1.0)
    assert woke == "the agent did not run for 60.0 s (the host slept or it was frozen)"


# -- the guest's loop, run by a real bash -----------------------------------------------------

FAKE_DATE = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/steps"
case "$2" in *-9*) echo "date: cannot set date: Operation not permitted" >&2; exit 1 ;; esac
"""


def test_the_loop_answers_and_steps_with_date(tmp_path: Path) -> None:
    (tmp_path / "date").write_text(FAKE_DATE)
    (tmp_path / "date").chmod(0o755)
    t0 = time.time()
    r = subprocess.run(
        ["sh", "-c", clock.COMMAND],
        input="\n+60.200000\n-9.000000\n; rm -rf /\n\n",
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = r.stdout.splitlines()
    assert lines[1:4] == ["s ok", "s date: cannot set date: Operation not permitted", "s bad"]
    for answer in (lines[0], lines[4]):
        assert t0 <= parse_time(answer) <= time.time()
    assert (tmp_path / "steps").read_text() == "-s +60.200000 seconds\n-s -9.000000 seconds\n"


# -- one sync over SSH, to a stand-in guest with a clock of its own ----------------------------

# The stand-in guest's `bash`: the loop's protocol, with the guest's clock as this machine's
# plus the offset in $HOME/offset (a step adds to it).
FAKE_BASH = """#!/usr/bin/env python3
import os, sys, time
path = os.path.join(os.environ["HOME"], "offset")
offset = float(open(path).read())
for line in sys.stdin:
    d = line.strip()
    if not d:
        print(f"t {time.time() + offset:.6f}", flush=True)
    else:
        offset += float(d)
        # Aside, then renamed: the test reads the file meanwhile, never half-written.
        open(path + ".new", "w").write(repr(offset))
        os.replace(path + ".new", path)
        print("s ok", flush=True)
"""


@pytest.fixture
def guest_clock(guest: Guest) -> Path:
    (guest.bin / "bash").write_text(FAKE_BASH)
    (guest.bin / "bash").chmod(0o755)
    offset = guest.home / "offset"
    offset.write_text("-60.2")
    return offset


def test_a_guest_behind_is_stepped_onto_the_host(
    guest_clock: Path, transport: paramiko.Transport
) -> None:
    done = sync(transport)
    assert done.decision is Decision.STEP
    assert done.before.offset == pytest.approx(-60.2, abs=done.before.error + 0.001)
    assert done.after is not None
    assert abs(done.after.offset) <= done.after.error + 0.001
    assert abs(float(guest_clock.read_text())) < 0.02  # what the guest's clock was given
    print(f"loopback: error ±{done.before.error * 1000:.2f} ms")


def test_a_guest_in_sync_is_left_alone(guest_clock: Path, transport: paramiko.Transport) -> None:
    guest_clock.write_text("0.03")
    done = sync(transport)
    assert done.decision is Decision.IN_SYNC and done.after is None
    assert done.before.offset == pytest.approx(0.03, abs=done.before.error + 0.001)
    assert guest_clock.read_text() == "0.03"


def test_a_guest_without_the_loop_says_why(guest: Guest, transport: paramiko.Transport) -> None:
    (guest.bin / "bash").write_text("#!/bin/sh\necho 'bash: not found' >&2\nexit 127\n")
    (guest.bin / "bash").chmod(0o755)
    with pytest.raises(clock.ClockError, match="bash: not found") as caught:
        sync(transport)
    assert "GNU date" in (caught.value.hint or "")


# -- the keeper: when --------------------------------------------------------------------------


class FakeLink:
    def __init__(self) -> None:
        self.down_reason = ""
        self.live = object()
        self.dead: list[str] = []
        self.retried = 0

    def transport(self, wait: float) -> paramiko.Transport:
        if self.down_reason:
            raise SSHDown("down")
        return self.live

    def link_dead(self, transport: paramiko.Transport | None, reason: str) -> None:
        self.dead.append(reason)

    def retry_now(self) -> None:
        self.retried += 1


class Syncs:
    """The keeper's sync, recorded: the timeout it was given, answering or failing."""

    def __init__(self) -> None:
        self.timeouts: list[float] = []
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def __call__(self, transport: paramiko.Transport, timeout: float) -> Synced:
        with self.lock:
            self.timeouts.append(timeout)
        if self.fail is not None:
            raise self.fail
        return Synced(Estimate(-60.0, 0.002), Decision.STEP, Estimate(0.001, 0.002))

    def count(self) -> int:
        with self.lock:
            return len(self.timeouts)


class Host:
    """The host's clocks as the keeper reads them, with a sleep to inject."""

    def __init__(self) -> None:
        self.slept = 0.0

    def now(self) -> HostTime:
        return HostTime(time.time() + self.slept, time.monotonic())


def keeper(link: FakeLink, syncs: Syncs, host: Host, every: float = 60.0) -> ClockKeeper:
    k = ClockKeeper(link, every=every, tick=0.02, now=host.now, do_sync=syncs)
    k.start()
    return k


def stopped(k: ClockKeeper) -> None:
    t0 = time.monotonic()
    k.close()
    assert k.join(Deadline(2))
    assert time.monotonic() - t0 < 0.5


def test_it_syncs_at_start_on_request_and_periodically() -> None:
    link, syncs, host = FakeLink(), Syncs(), Host()
    k = keeper(link, syncs, host)
    until(lambda: syncs.count() == 1, 2)
    k.request("SSH back")
    until(lambda: syncs.count() == 2, 2)
    assert syncs.timeouts == [clock.SYNC_TIMEOUT] * 2
    assert len(k.synced) == 2 and k.wakes == 0
    stopped(k)

    periodic = keeper(link, Syncs(), host, every=0.05)
    until(lambda: len(periodic.synced) >= 4, 2)
    stopped(periodic)


class LateRequest(threading.Event):
    """The keeper's request event, with a request made just after one of its waits timed
    out, before the keeper goes on: a thread switch there once lost the request."""

    def __init__(self, request: Callable[[], None]) -> None:
        super().__init__()
        self.request: Callable[[], None] | None = request

    def wait(self, timeout: float | None = None) -> bool:
        got = super().wait(timeout)
        if not got and self.request is not None:
            request, self.request = self.request, None
            request()
        return got


def test_a_request_made_as_a_wait_times_out_is_not_lost() -> None:
    link, syncs, host = FakeLink(), Syncs(), Host()
    k = ClockKeeper(link, every=60.0, tick=0.02, now=host.now, do_sync=syncs)
    k._asked = LateRequest(lambda: k.request("SSH back"))
    k.start()
    try:
        until(lambda: syncs.count() == 2, 2, what="the start's sync, then the request's")
    finally:
        stopped(k)


def test_a_wake_syncs_at_once_as_a_probe_and_drops_a_silent_link() -> None:
    link, syncs, host = FakeLink(), Syncs(), Host()
    k = keeper(link, syncs, host)
    until(lambda: syncs.count() == 1, 2)
    host.slept = 60.0
    until(lambda: syncs.count() == 2, 2)
    assert syncs.timeouts[1] == clock.PROBE_TIMEOUT and k.wakes == 1
    assert link.dead == []  # it answered: the link stays

    syncs.fail = TimeoutError("timed out")
    host.slept = 120.0
    until(lambda: link.dead, 2)
    assert link.dead == ["no answer from the VM after the wake (timed out)"]
    stopped(k)


def test_a_sleep_during_a_sync_is_seen_on_waking() -> None:
    """The host sleeps while a sync waits on the guest: once that sync gives up, the jump it
    spanned still calls for a probe."""
    link, syncs, host = FakeLink(), Syncs(), Host()
    inside, release = threading.Event(), threading.Event()

    def slow(transport: paramiko.Transport, timeout: float) -> Synced:
        if syncs.count() == 0:
            inside.set()
            release.wait(5)
        return syncs(transport, timeout)

    k = ClockKeeper(link, tick=0.02, now=host.now, do_sync=slow)
    k.start()
    assert inside.wait(2)
    host.slept = 60.0
    release.set()
    until(lambda: syncs.count() == 2, 2)
    assert syncs.timeouts == [clock.SYNC_TIMEOUT, clock.PROBE_TIMEOUT] and k.wakes == 1
    stopped(k)


def test_a_wake_while_reconnecting_retries_at_once() -> None:
    link, syncs, host = FakeLink(), Syncs(), Host()
    k = keeper(link, syncs, host)
    until(lambda: syncs.count() == 1, 2)
    link.down_reason = "the VM's SSH server stopped answering"
    host.slept = 60.0
    until(lambda: link.retried == 1, 2)
    assert syncs.count() == 1  # nothing to sync on: the reconnect will ask
    stopped(k)


def test_a_failed_periodic_sync_does_not_drop_the_link() -> None:
    link, syncs, host = FakeLink(), Syncs(), Host()
    syncs.fail = LINK_ERRORS[0]("channel closed")
    k = keeper(link, syncs, host, every=0.05)
    until(lambda: syncs.count() >= 3, 2)
    assert link.dead == [] and k.synced == []
    stopped(k)


# -- the keeper on the agent's real session ---------------------------------------------------


def offset_of(path: Path) -> float:
    return float(path.read_text())


def test_a_wake_drops_a_silent_link_and_the_reconnect_steps_the_guest(
    guest: Guest, guest_clock: Path
) -> None:
    """The agent's wiring (pyd.agent.main): the keeper starts on the session and hears every
    reconnect. The host sleeps with the link silent after it (the default heartbeat would
    take 4 s to tell): the wake's probe drops it at once, and the reconnect steps the guest's
    clock, which the sleep left behind."""
    proxy = LinkProxy(guest.server.port)
    target = SSHTarget("127.0.0.1", proxy.port, "root", guest.key, host_keypair().public_openssh)
    session = SSHSession(target)
    session.connect(time.monotonic() + 10)
    host = Host()
    k = ClockKeeper(session, tick=0.05, now=host.now)
    downs: list[str] = []
    session.keep(downs.append, lambda seconds: k.request("SSH back"), lambda e: None)
    k.start()
    try:
        until(lambda: abs(offset_of(guest_clock)) < 0.02, 5, what="stepped at start")
        until(lambda: k.synced, 10, what="the start's sync done")  # its last measure too
        guest_clock.write_text("-5.0")
        proxy.cut()
        t0 = time.monotonic()
        host.slept = 60.0
        until(lambda: downs, 5, what="the silent link dropped")
        dropped = time.monotonic() - t0
        assert downs[0].startswith("no answer from the VM after the wake")
        proxy.restore()
        until(lambda: abs(offset_of(guest_clock)) < 0.02, 5, what="stepped after the reconnect")
        assert dropped < clock.PROBE_TIMEOUT + 1  # the heartbeat alone: 4 s
        assert [s.before.offset < -4.9 for s in k.synced[-1:]] == [True]
    finally:
        k.close()
        session.close()
        assert k.join(Deadline(5)) and session.join(Deadline(5))
        proxy.close()
