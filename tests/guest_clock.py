"""The guest's clock measured from outside pyd, the way its agent measures it (pyd.agent.clock
on a connection of the caller's, with the instance's pinned key): for the clock e2e test and
bench/clock_sync.py."""

from __future__ import annotations

import time
from pathlib import Path

import paramiko

from pyd.agent.clock import Estimate, GuestClock
from pyd.agent.main import guest_session
from pyd.errors import PydError
from pyd.instance.files import InstanceFiles
from pyd.ssh.connect import connect
from pyd.ssh.link_errors import LINK_ERRORS

# The link not back yet, or the guest's loop failing: measured again.
MEASURE_ERRORS: tuple[type[Exception], ...] = (*LINK_ERRORS, PydError)


class GuestClockProbe:
    """One instance's guest clock, re-connecting when the link fails."""

    def __init__(self, root: Path) -> None:
        self.target = guest_session(InstanceFiles(root)).target
        self.client: paramiko.SSHClient | None = None

    def estimate(self) -> Estimate | None:
        """The guest's offset from the host now, or None when it cannot be measured now."""
        try:
            if self.client is None:
                self.client = connect(self.target)
            transport = self.client.get_transport()
            if transport is None:
                raise PydError("no SSH transport")
            guest = GuestClock(transport, 5.0)
            try:
                return guest.measure()
            finally:
                guest.close()
        except MEASURE_ERRORS:
            self.close()
            return None

    def seconds_until_within(self, limit: float, seconds: float) -> float:
        """Seconds until the guest's clock is within `limit` of the host's (measured every
        50 ms); an AssertionError after `seconds`."""
        t0 = time.monotonic()
        while True:
            found = self.estimate()
            if found is not None and abs(found.offset) <= limit:
                return time.monotonic() - t0
            if time.monotonic() - t0 > seconds:
                last = "not measurable" if found is None else f"{found.offset:+.3f} s off"
                raise AssertionError(f"guest clock not within {limit} s in {seconds} s ({last})")
            time.sleep(0.05)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
