"""The host's terminal during an interactive `pyd docker`: its size and type for the guest's
PTY, and raw mode while the guest's PTY does the terminal work (echo, line editing, Ctrl-C
and Ctrl-\\ becoming signals there), as `ssh -t` does.

POSIX hosts only, for now. A Windows console would need its own branch (console modes set
through the Win32 API, input read as VT sequences, the size polled: there is no SIGWINCH);
until that exists, PTY_SUPPORTED is False there and `pyd docker` refuses `-t` in a console
with a hint (launch.py) instead of misbehaving.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

DEFAULT_SIZE = (80, 24)
DEFAULT_TERM = "xterm"


def size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd`; 80x24 when it says nothing useful."""
    try:
        columns, rows = os.get_terminal_size(fd)
    except OSError:
        return DEFAULT_SIZE
    return (columns, rows) if columns > 0 and rows > 0 else DEFAULT_SIZE


def term_name(env: Mapping[str, str]) -> str:
    """The terminal type the guest's PTY announces: the host's TERM."""
    return env.get("TERM") or DEFAULT_TERM


if sys.platform == "win32":
    PTY_SUPPORTED = False

    @contextlib.contextmanager
    def raw_mode(fd: int) -> Iterator[None]:
        raise NotImplementedError("no raw console mode on Windows yet (see this module)")
        yield  # pragma: no cover

    class RawTerminal:
        """The POSIX class's interface; `pyd docker` through the agent (its only user)
        never runs on Windows (no descriptor passing)."""

        def __init__(self, fd: int) -> None:
            raise NotImplementedError("no raw console mode on Windows yet (see this module)")

        def enter(self) -> None: ...
        def leave(self) -> None: ...

    def wait_for_foreground(fd: int) -> None:
        """No job control on Windows: the console is always ours."""

else:
    import termios
    import tty

    PTY_SUPPORTED = True

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

    @contextlib.contextmanager
    def raw_mode(fd: int) -> Iterator[None]:
        """The terminal on `fd` in raw mode until the block ends, however it ends."""
        raw = RawTerminal(fd)
        raw.enter()
        try:
            yield
        finally:
            raw.leave()

    def wait_for_foreground(fd: int) -> None:
        """Returns once this process may use the terminal on `fd`: from a background job
        the kernel stops it here (SIGTTOU) until `fg`, as it stops `ssh -t`."""
        termios.tcsetattr(fd, termios.TCSANOW, termios.tcgetattr(fd))
