"""Settings for every test."""

from __future__ import annotations

import signal


def pytest_configure() -> None:
    """A test run started in the background of a non-interactive shell (`.ci/run &`, nohup,
    some CI runners) ignores SIGINT and SIGQUIT, and every child inherits that: a shell
    cannot even trap a signal ignored on entry. Tests of Ctrl-C and Ctrl-\\ reaching docker
    through a guest's shell need what a terminal session has, so both go back to normal
    here (a handler is reset to the default in each child at exec; an ignored signal is
    not)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
