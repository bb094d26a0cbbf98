"""The host's side of a docker command run in the guest: the file descriptors of its stdin,
stdout and stderr, whether they make a terminal session, and the signals it takes. (Apart
from the SSH session in run.py, so that `pyd docker` through the agent never imports
paramiko.)"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from pyd.guestdocker import terminal


@dataclass(frozen=True)
class HostStreams:
    """File descriptors for the command's stdin, stdout and stderr."""

    stdin: int
    stdout: int
    stderr: int

    @classmethod
    def standard(cls) -> HostStreams:
        """This process's own 0, 1 and 2 (by number: sys.stdin is None when 0 is closed)."""
        return cls(0, 1, 2)

    def fds(self) -> list[int]:
        return [self.stdin, self.stdout, self.stderr]

    def terminals(self) -> bool:
        """Whether all three are a terminal (a Windows console counts)."""
        return all(os.isatty(fd) for fd in self.fds())

    def interactive(self) -> bool:
        """Whether the command gets a terminal: all three are one, on a host that can."""
        return terminal.PTY_SUPPORTED and self.terminals()


def open_standard_fds() -> None:
    """The null device on 0, 1 and 2 where they are closed (`pyd docker ... <&-`), as
    OpenSSH's client does first thing: otherwise the next socket opened takes the number,
    and the command would read its input from pyd's own connection. Call before opening
    anything."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if opened != fd:
                os.close(opened)


INTERRUPTS_TO_GIVE_UP = 3  # Ctrl-Cs after which pyd stops waiting for the command to end

# The signals a docker command takes from the host: Ctrl-C, Ctrl-\, and being told to end.
if sys.platform == "win32":
    FORWARDED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGBREAK)
else:
    FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)


# Ctrl-Z and `fg`: a `pyd docker` client of the agent stops itself, and has the agent pause
# the command's streams meanwhile (pyd.guestdocker.agent_link).
if sys.platform == "win32":
    PAUSE_SIGNALS: tuple[signal.Signals, ...] = ()
else:
    PAUSE_SIGNALS = (signal.SIGTSTP, signal.SIGCONT)


def taken_signals(interactive: bool) -> list[signal.Signals]:
    """The signals to catch while the command runs; with a terminal, window changes too."""
    wanted = list(FORWARDED_SIGNALS)
    if interactive and sys.platform != "win32":
        wanted.append(signal.SIGWINCH)
    return wanted


@contextlib.contextmanager
def signals_to(handler: Callable[[int], None], signums: Iterable[signal.Signals]) -> Iterator[None]:
    """`handler(signum)` for each of `signums` until the block ends, then the previous
    handlers back. Outside the main thread (where signal.signal cannot be called), nothing:
    signals are then the caller's business."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for signum in signums:
            previous[signum] = signal.signal(signum, lambda n, _frame: handler(n))
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
