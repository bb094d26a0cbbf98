"""The host's terminal during an interactive `pyd docker`: its size and type for the guest's
PTY, and raw mode while the guest's PTY does the terminal work (echo, line editing, Ctrl-C
and Ctrl-\\ becoming signals there), as `ssh -t` does.

POSIX: termios. Windows: the console's modes through the Win32 API (pyd.guestdocker.
win_console), keys read as VT sequences; a console says nothing when resized (no SIGWINCH),
so its size is polled (poll_window). PTY_SUPPORTED says whether this process can have one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pyd.errors import PydError

DEFAULT_SIZE = (80, 24)
DEFAULT_TERM = "xterm"


WINDOW_POLL = 0.25  # seconds between two looks at a Windows console's size


def size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd`; 80x24 when it says nothing useful. On
    Windows, a console screen buffer's visible window (an input handle has no size: OSError;
    some Python versions take only 0, 1 and 2 there: ValueError for others)."""
    try:
        columns, rows = os.get_terminal_size(fd)
    except (OSError, ValueError):
        return DEFAULT_SIZE
    return (columns, rows) if columns > 0 and rows > 0 else DEFAULT_SIZE


def term_name(env: Mapping[str, str]) -> str:
    """The terminal type the guest's PTY announces: the host's TERM."""
    return env.get("TERM") or DEFAULT_TERM


def pty_supported(platform: str, consoles: Callable[[], bool]) -> bool:
    """Whether this process can give a command a terminal (`platform`: sys.platform's
    values): on POSIX with termios (whether the streams are terminals decides then); on
    Windows when `consoles()`: stdin, stdout and stderr are consoles."""
    return platform != "win32" or consoles()


def window_polled(platform: str) -> bool:
    """Whether the terminal's size is looked at while a command runs: a Windows console
    changes size without a signal (POSIX has SIGWINCH)."""
    return platform == "win32"


def poll_window(
    measure: Callable[[], tuple[int, int]],
    changed: Callable[[tuple[int, int]], None],
    done: threading.Event,
    interval: float = WINDOW_POLL,
) -> None:
    """Calls `changed(size)` whenever `measure()` differs from the last look, every
    `interval` until `done` is set: a Windows console's size changes (no SIGWINCH there)."""
    last = measure()
    while not done.wait(interval):
        now = measure()
        if now != last:
            last = now
            changed(now)


if sys.platform == "win32":
    from pyd.guestdocker import win_console

    _CONSOLE = win_console.Win32Console()
    # A PTY in the guest needs consoles on stdin, stdout and stderr (os.isatty also says
    # yes for NUL); none under mintty, whose pipes no_console_error() explains.
    PTY_SUPPORTED = pty_supported(sys.platform, lambda: win_console.consoles(_CONSOLE, (0, 1, 2)))

    class RawTerminal(win_console.RawConsole):
        """The console on `fd` (and this process's console output) in raw mode between
        enter() and leave(), both of which may be called again, as on POSIX."""

        def __init__(self, fd: int) -> None:
            super().__init__(fd, _CONSOLE)

    def no_console_error(fd: int) -> PydError | None:
        """Why `-t` cannot have a terminal with `fd` as stdin, when the user sees one."""
        return win_console.no_console_error(sys.platform, win_console.pipe_name(fd))

    def wait_for_foreground(fd: int) -> None:
        """No job control on Windows: the console is always ours."""

else:
    import termios
    import tty

    PTY_SUPPORTED = pty_supported(sys.platform, lambda: True)

    class RawTerminal:
        """The terminal on `fd` in raw mode between enter() and leave() (no echo, no line
        editing, no signals from keys, no output processing); both may be called again
        (a stopped and continued command). TCSADRAIN: output already written is shown
        with the old settings, typed-ahead input is kept."""

        def __init__(self, fd: int) -> None:
            self.fd = fd
            self._saved: list[Any] | None = None

        def enter(self) -> None:
            if self._saved is None:
                self._saved = termios.tcgetattr(self.fd)
                tty.setraw(self.fd, termios.TCSADRAIN)

        def leave(self) -> None:
            saved, self._saved = self._saved, None
            if saved is not None:
                # A terminal that hung up (its window closed) has nothing left to restore.
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)

    def no_console_error(fd: int) -> PydError | None:
        """A terminal on POSIX is one: nothing to explain."""
        return None

    def wait_for_foreground(fd: int) -> None:
        """Returns once this process may use the terminal on `fd`: from a background job
        the kernel stops it here (SIGTTOU) until `fg`, as it stops `ssh -t`."""
        termios.tcsetattr(fd, termios.TCSANOW, termios.tcgetattr(fd))


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """The terminal on `fd` in raw mode until the block ends, however it ends."""
    raw = RawTerminal(fd)
    raw.enter()
    try:
        yield
    finally:
        raw.leave()
