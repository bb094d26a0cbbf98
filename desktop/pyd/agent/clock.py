"""The guest's clock follows the host's: the agent measures the guest's offset over its SSH
link and steps the guest when it is off by more than STEP_OVER, right after each (re)connect,
at once when the host wakes from sleep, and every EVERY seconds.

A guest's clock stops while its VM is paused, saved or frozen by a host that sleeps, and the
guest has no NTP: left alone it stays behind by every such pause. The host pushes its time
instead, as Lima does, and reacts to a wake at once rather than at the next periodic check.

Measuring: one exec runs a bash loop in the guest that answers each empty line with bash's
$EPOCHREALTIME (a builtin: no fork, so each answer is one round trip on an open channel, a few
milliseconds even under emulation). The host brackets every answer with time.time() before and
after; the guest read its clock somewhere in between, so offset = guest - midpoint with an
error bound of half the round trip, and the sample with the smallest round trip wins.

Stepping: relative, not absolute. The loop runs GNU date with `-s "+60.200000 seconds"`, which
adds to the guest's clock as date itself reads it, just before it sets it: the fork and exec of
date, slow and unknowable under emulation, cost nothing. The offset is measured again after.

Noticing a wake (pure: host_wake): on Linux and macOS time.monotonic() stops while the host
sleeps and time.time() does not, so their difference jumps by the time slept (or by any step
of the wall clock: the guest must follow that too). On Windows up to Python 3.12
time.monotonic() is GetTickCount64, which counts sleep (Microsoft documents it), so the
difference stays put and the wake shows as a gap instead: far more monotonic time passed than
the keeper waited (which also catches a process that was frozen: SIGSTOP, a suspended host VM).
Python 3.13 reads QueryPerformanceCounter there, whose behaviour in sleep is not documented:
whichever it does, one of the two signs shows the wake.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import paramiko

from pyd.errors import PydError
from pyd.host.threads import Deadline, join_threads
from pyd.ssh.link_errors import LINK_ERRORS

log = logging.getLogger("pyd.agent")

STEP_OVER = 0.1  # seconds of offset that the guest is stepped for (issue 18)
EVERY = 60.0  # the periodic check: one exec, a few round trips
TICK = 1.0  # the host's two clocks are compared this often (no guest work)
JUMP = 0.5  # wall minus monotonic moved this much: the host slept, or its clock was set
GAP = 5.0  # monotonic time beyond the wait that says the agent did not run (Windows' sleep)
SAMPLES = 5  # round trips per measure; the first also waits for bash to start
SYNC_TIMEOUT = 10.0  # one sync, under emulation and load
# After a wake the link may look alive and be dead: a sync answered within this proves it,
# and one that is not drops the link, which the SSH keeper re-makes at once.
PROBE_TIMEOUT = 2.0
RETRY_UNTRUSTED = 5.0  # round trips too slow to trust: measure again this soon

# Each empty line: "t SECONDS.MICROS". A signed decimal: the clock stepped by that many
# seconds, then "s ok" or "s <date's first line of error>". Anything else: "s bad".
SCRIPT = r"""LC_ALL=C
while IFS= read -r d; do
  if [ -z "$d" ]; then echo "t $EPOCHREALTIME"; continue; fi
  case $d in
    [+-][0-9]*.[0-9]*) ;;
    *) echo "s bad"; continue ;;
  esac
  if e=$(date -s "$d seconds" 2>&1 >/dev/null); then echo "s ok"; else echo "s ${e%%$'\n'*}"; fi
done"""
COMMAND = "exec bash -c " + shlex.quote(SCRIPT)

_STEP = re.compile(r"[+-][0-9]+\.[0-9]+")


# -- pure core -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One round trip: host time.time() before asking and after the answer, and the guest's
    clock as it answered."""

    before: float
    guest: float
    after: float

    @property
    def round_trip(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class Estimate:
    offset: float  # guest minus host, seconds: negative when the guest is behind
    error: float  # the true offset is within offset ± error

    def describe(self) -> str:
        """e.g. "60.2 s behind", "0.004 s ahead"."""
        size = abs(self.offset)
        text = f"{size:.1f} s" if size >= 1 else f"{size:.3f} s"
        return text + (" behind" if self.offset < 0 else " ahead")


def estimate(samples: list[Sample]) -> Estimate | None:
    """The offset from the sample with the smallest round trip; None without samples."""
    if not samples:
        return None
    best = min(samples, key=lambda s: s.round_trip)
    midpoint = (best.before + best.after) / 2
    return Estimate(best.guest - midpoint, best.round_trip / 2)


class Decision(Enum):
    IN_SYNC = "in sync"
    STEP = "step"
    UNTRUSTED = "untrusted"  # the error bound is too wide to tell or to step by


def decide(found: Estimate, step_over: float = STEP_OVER) -> Decision:
    """Step when the offset exceeds `step_over`, provided the measure can be trusted: its
    error bound under `step_over` / 2, or, for a large offset, under half of it (a step then
    certainly brings the guest closer than it was)."""
    size = abs(found.offset)
    if found.error > step_over / 2 and found.error >= size / 2:
        return Decision.UNTRUSTED
    return Decision.STEP if size > step_over else Decision.IN_SYNC


def step_line(found: Estimate) -> str:
    """What the guest's loop is sent to step its clock back onto the host's."""
    return f"{-found.offset:+.6f}"


def parse_time(line: str) -> float:
    """The guest's answer to an empty line: "t 1796340032.158752" (a comma under a locale that
    writes one)."""
    kind, _, value = line.strip().partition(" ")
    if kind != "t":
        raise ValueError(f"not a time: {line.strip()!r}")
    return float(value.replace(",", "."))


@dataclass(frozen=True)
class HostTime:
    """The host's two clocks, read together."""

    wall: float  # time.time()
    mono: float  # time.monotonic()


def host_time() -> HostTime:
    return HostTime(time.time(), time.monotonic())


def host_wake(
    before: HostTime, after: HostTime, waited: float, jump: float = JUMP, gap: float = GAP
) -> str:
    """Why the host's clocks say the guest's clock may be off now ("" when they do not):
    `before` read, then a wait of at most `waited` seconds, then `after`."""
    moved = (after.wall - after.mono) - (before.wall - before.mono)
    if abs(moved) > jump:
        way = "ahead" if moved > 0 else "back"
        return f"the host's clock jumped {abs(moved):.1f} s {way} (the host slept or was set)"
    lost = (after.mono - before.mono) - waited
    if lost > gap:
        return f"the agent did not run for {lost:.1f} s (the host slept or it was frozen)"
    return ""


# -- the edge: one sync over the SSH link ----------------------------------------------------


class ClockError(PydError):
    """The guest's clock could not be read or set (the link is not to blame)."""


@dataclass(frozen=True)
class Synced:
    before: Estimate
    decision: Decision
    after: Estimate | None = None  # measured again after a step


class GuestClock:
    """The guest's end of a sync: the loop in one exec channel, opened on `transport`."""

    def __init__(self, transport: paramiko.Transport, timeout: float) -> None:
        self._chan = transport.open_session(timeout=timeout)
        self._chan.settimeout(timeout)
        self._buffer = b""
        self._chan.exec_command(COMMAND)

    def close(self) -> None:
        """Ends the loop (end of its stdin) and the channel; a read blocked on it fails."""
        self._chan.close()

    def _ended(self) -> Exception:
        """Why the loop's channel ended: the loop exited (it has an exit status), or the link
        under it went (a link error: a probe drops the link for it)."""
        self._chan.status_event.wait(1.0)  # sshd sends the status just after the EOF
        if self._chan.exit_status < 0:
            return EOFError("the SSH channel closed")
        err = self._chan.recv_stderr(4096).decode(errors="replace").strip()
        return ClockError(
            "the guest's clock loop ended" + (f": {err}" if err else ""),
            hint="the guest needs bash and GNU date",
        )

    def _send(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except OSError:
            raise self._ended() from None

    def _line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = self._chan.recv(4096)
            if not chunk:
                raise self._ended()
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def sample(self) -> Sample:
        before = time.time()
        self._send(b"\n")
        line = self._line()
        after = time.time()
        try:
            return Sample(before, parse_time(line), after)
        except ValueError as e:
            raise ClockError(f"the guest's clock loop said {line!r}: {e}") from None

    def measure(self, samples: int = SAMPLES) -> Estimate:
        found = estimate([self.sample() for _ in range(samples)])
        assert found is not None
        return found

    def step(self, found: Estimate) -> None:
        line = step_line(found)
        assert _STEP.fullmatch(line), line
        self._send(line.encode() + b"\n")
        said = self._line()
        if said.strip() != "s ok":
            raise ClockError(f"the guest's clock could not be set: {said.removeprefix('s ')}")


def sync(transport: paramiko.Transport, timeout: float = SYNC_TIMEOUT) -> Synced:
    """Measures the guest's offset and steps it when `decide` says so. LINK_ERRORS and
    ClockError pass through."""
    guest = GuestClock(transport, timeout)
    try:
        before = guest.measure()
        decision = decide(before)
        if decision is not Decision.STEP:
            return Synced(before, decision)
        guest.step(before)
        return Synced(before, decision, guest.measure())
    finally:
        guest.close()


# -- the keeper: when to sync ----------------------------------------------------------------


class Link(Protocol):
    """What the keeper needs of the agent's SSH session (pyd.agent.session.SSHSession)."""

    down_reason: str

    def transport(self, wait: float) -> paramiko.Transport: ...

    def link_dead(self, transport: paramiko.Transport | None, reason: str) -> None: ...

    def retry_now(self) -> None: ...


class ClockKeeper:
    """A thread owner (pyd.host.threads): syncs at once when started, when request()ed (the
    agent asks after every SSH reconnect), on a host wake and every `every` seconds; one sync
    at a time, all from its one thread."""

    def __init__(
        self,
        link: Link,
        every: float = EVERY,
        tick: float = TICK,
        now: Callable[[], HostTime] = host_time,
        do_sync: Callable[[paramiko.Transport, float], Synced] = sync,
    ) -> None:
        self._link = link
        self._every = every
        self._tick = tick
        self._now = now
        self._sync = do_sync
        self._stop = threading.Event()
        self._asked = threading.Event()
        self._why = "the agent started"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="pyd-clock", daemon=True)
        self.synced: list[Synced] = []  # the last few (tests, logs)
        self.wakes = 0

    def start(self) -> None:
        self._thread.start()

    def request(self, why: str) -> None:
        """A sync soon (any thread): e.g. the SSH link is back."""
        with self._lock:
            self._why = why
        self._asked.set()

    def close(self) -> None:
        self._stop.set()
        self._asked.set()

    def join(self, deadline: Deadline) -> bool:
        return join_threads([self._thread], deadline)

    def _run(self) -> None:
        why, probe = "the agent started", False
        due = time.monotonic()
        while not self._stop.is_set():
            # Read before the sync too: a host that sleeps during one is seen on waking.
            before = self._now()
            if not why and time.monotonic() >= due:
                why = "periodic check"
            if why:
                retry = self._once(why, probe)
                due = time.monotonic() + (RETRY_UNTRUSTED if retry else self._every)
                why, probe = "", False
            busy = self._now().mono - before.mono
            wait = min(self._tick, max(0.0, due - time.monotonic()))
            asked = self._asked.wait(wait)
            if asked:
                # Only then: a request made after a wait that timed out stays for the next one
                # (cleared regardless, one landing between the two was lost: a reconnect's
                # sync put off to the periodic check, a minute later).
                self._asked.clear()
            if self._stop.is_set():
                return
            woke = host_wake(before, self._now(), busy + wait)
            if woke:
                self.wakes += 1
                log.info("clock: %s; checking the link and the guest's clock now", woke)
                why, probe = woke, True
            elif asked:
                with self._lock:
                    why = self._why

    def _once(self, why: str, probe: bool) -> bool:
        """One sync; True when it should be tried again soon."""
        try:
            transport = self._link.transport(0)
        except PydError:
            if probe:
                self._link.retry_now()  # reconnecting: try at once, not at the next retry
            return False  # the reconnect asks for a sync
        try:
            done = self._sync(transport, PROBE_TIMEOUT if probe else SYNC_TIMEOUT)
        except LINK_ERRORS as e:
            if probe and not self._stop.is_set():
                # Alive before the sleep, silent after it: remade now, not after the heartbeat.
                self._link.link_dead(transport, f"no answer from the VM after the wake ({e})")
            elif not self._stop.is_set():
                log.info("clock: not checked (%s): %s", why, e or type(e).__name__)
            return False
        except ClockError as e:
            log.warning("clock: not checked (%s): %s", why, e.message)
            return False
        self.synced = [*self.synced[-9:], done]
        if done.decision is Decision.STEP:
            after = f"; now {done.after.describe()}" if done.after else ""
            log.info(
                "clock: guest was %s (%s); stepped%s (±%.3f s)",
                done.before.describe(),
                why,
                after,
                (done.after or done.before).error,
            )
        elif done.decision is Decision.UNTRUSTED:
            log.info(
                "clock: guest %s ± %.3f s: too uncertain to step; again in %.0f s",
                done.before.describe(),
                done.before.error,
                RETRY_UNTRUSTED,
            )
            return True
        return False
