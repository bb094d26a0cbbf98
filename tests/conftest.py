"""Settings for every test."""

from __future__ import annotations

import signal
from types import FrameType


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Ignores a signal, as an ignored disposition would, but only in this process."""


def pytest_configure() -> None:
    """A test run started in the background of a non-interactive shell (`.ci/run &`) ignores
    SIGINT and SIGQUIT, under nohup SIGHUP too, and every child inherits an ignored signal:
    a shell cannot even trap one ignored on entry. Tests of Ctrl-C, Ctrl-\\ and a closed
    terminal reaching docker through a guest's shell need the children to start as in a
    terminal session (as sshd starts the guest's shell). A handler, unlike an ignored
    disposition, is reset to the default in each child at exec; this one keeps ignoring
    the signal in the test process itself, as whoever started it asked."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, _ignore)
