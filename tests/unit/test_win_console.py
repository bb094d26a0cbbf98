"""The Windows console's raw mode for `pyd docker -t` (pyd.guestdocker.win_console and the
platform choices in pyd.guestdocker.terminal), run here: the modes and code pages computed,
RawConsole's enter/leave against a stand-in for kernel32, what mintty's pipes are told; and
the stdin queue that lets a framed session's stdin end with its command (run.QueuedStdin)."""

from __future__ import annotations

import os
import threading

import paramiko
import pytest

from pyd.errors import PydError
from pyd.guestdocker import terminal
from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.run import GuestSession, QueuedStdin, held_by_client
from pyd.guestdocker.streams import HostStreams
from pyd.guestdocker.win_console import (
    CP_UTF8,
    DISABLE_NEWLINE_AUTO_RETURN,
    ENABLE_VIRTUAL_TERMINAL_INPUT,
    ENABLE_VIRTUAL_TERMINAL_PROCESSING,
    ConsoleState,
    RawConsole,
    consoles,
    is_mintty_pipe,
    no_console_error,
    raw_input_mode,
    raw_output_modes,
    raw_state,
)

PLATFORMS = ["linux", "darwin", "win32"]

# What a new cmd.exe / Windows Terminal tab reports (GetConsoleMode): input PROCESSED | LINE |
# ECHO | INSERT | QUICK_EDIT | EXTENDED_FLAGS | AUTO_POSITION; output PROCESSED | WRAP_AT_EOL.
COOKED_IN, COOKED_OUT = 0x01E7, 0x0003
OEM_US = 437


# -- the pure core ----------------------------------------------------------------------------


def test_raw_input_clears_ctrl_c_line_and_echo_and_reads_keys_as_vt() -> None:
    # Bits 0x1, 0x2, 0x4 cleared, 0x200 set, the user's other bits (quick edit...) kept.
    assert raw_input_mode(COOKED_IN) == 0x03E0
    assert raw_input_mode(0) == ENABLE_VIRTUAL_TERMINAL_INPUT
    assert raw_input_mode(raw_input_mode(COOKED_IN)) == raw_input_mode(COOKED_IN)


def test_raw_output_takes_vt_and_no_auto_return_then_falls_back_to_vt_alone() -> None:
    assert raw_output_modes(COOKED_OUT) == [0x000F, 0x0007]
    # Processed output is set too: a console that had it off interprets nothing otherwise.
    assert raw_output_modes(0) == [0x000D, 0x0005]


def test_raw_state_is_utf8_both_ways() -> None:
    saved = ConsoleState(COOKED_IN, COOKED_OUT, OEM_US, OEM_US)
    assert raw_state(saved) == ConsoleState(0x03E0, 0x000F, CP_UTF8, CP_UTF8)


@pytest.mark.parametrize(
    ("name", "mintty"),
    [
        ("\\msys-1888ae32e00d56aa-pty0-from-master", True),
        ("\\cygwin-e022582115c10879-pty3-from-master", True),
        ("\\msys-1888ae32e00d56aa-13496-pipe-0x1", False),  # a pipe between two programs
        ("\\pyd-default.exec", False),
        ("", False),
    ],
)
def test_minttys_pipes_are_told_from_others(name: str, mintty: bool) -> None:
    assert is_mintty_pipe(name) is mintty


@pytest.mark.parametrize("platform", PLATFORMS)
def test_t_without_a_console_is_refused_only_for_mintty_on_windows(platform: str) -> None:
    pty = "\\msys-1888ae32e00d56aa-pty0-from-master"
    error = no_console_error(platform, pty)
    if platform == "win32":
        assert isinstance(error, PydError)
        assert "winpty" in error.hint and "Windows Terminal" in error.hint
    else:
        assert error is None
    # A file, or a pipe from another program: no PTY, as on POSIX, and nothing said.
    assert no_console_error(platform, None) is None
    assert no_console_error(platform, "\\msys-1888ae32e00d56aa-13496-pipe-0x1") is None


@pytest.mark.parametrize("platform", PLATFORMS)
def test_a_pty_on_windows_needs_consoles_and_its_size_is_polled(platform: str) -> None:
    assert terminal.pty_supported(platform, lambda: True) is True
    assert terminal.pty_supported(platform, lambda: False) is (platform != "win32")
    assert terminal.window_polled(platform) is (platform == "win32")


def test_poll_window_reports_changes_only() -> None:
    looks = iter([(80, 24), (80, 24), (100, 30), (100, 30), (90, 20), (90, 20)])
    done = threading.Event()
    seen: list[tuple[int, int]] = []

    def measure() -> tuple[int, int]:
        size = next(looks, None)
        if size is None:
            done.set()
            return (90, 20)
        return size

    terminal.poll_window(measure, seen.append, done, interval=0)
    assert seen == [(100, 30), (90, 20)]


@pytest.mark.parametrize("error", [OSError(6, "not a screen buffer"), ValueError("bad fd")])
def test_size_falls_back_when_the_console_says_nothing(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """An input handle has no size (OSError); Python takes only 0-2 on some Windows builds."""

    def fail(fd: int) -> os.terminal_size:
        raise error

    monkeypatch.setattr(os, "get_terminal_size", fail)
    assert terminal.size(5) == terminal.DEFAULT_SIZE


# -- RawConsole against a stand-in console ----------------------------------------------------

IN_HANDLE, OUT_HANDLE = 100, 200


class FakeConsole:
    """kernel32 as RawConsole sees it: one console, its handles, modes and code pages; each
    mode in `refused` is one SetConsoleMode fails on (an old console)."""

    def __init__(self, refused: frozenset[int] = frozenset(), consoles: bool = True) -> None:
        self.modes = {IN_HANDLE: COOKED_IN, OUT_HANDLE: COOKED_OUT}
        self.cps = (OEM_US, OEM_US)
        self.refused = refused
        self.consoles = consoles
        self.calls: list[str] = []

    def handle(self, fd: int) -> int:
        return {0: IN_HANDLE, 1: OUT_HANDLE, 2: OUT_HANDLE}.get(fd, -1)

    def output_handle(self) -> int:
        return OUT_HANDLE

    def get_mode(self, handle: int) -> int | None:
        return self.modes.get(handle) if self.consoles else None

    def set_mode(self, handle: int, mode: int) -> bool:
        self.calls.append(f"mode {handle} {mode:#x}")
        if mode in self.refused or handle not in self.modes:
            return False
        self.modes[handle] = mode
        return True

    def get_code_pages(self) -> tuple[int, int]:
        return self.cps

    def set_code_pages(self, input_cp: int, output_cp: int) -> bool:
        self.calls.append(f"cp {input_cp} {output_cp}")
        self.cps = (input_cp, output_cp)
        return True

    def state(self) -> ConsoleState:
        return ConsoleState(self.modes[IN_HANDLE], self.modes[OUT_HANDLE], *self.cps)


COOKED = ConsoleState(COOKED_IN, COOKED_OUT, OEM_US, OEM_US)


def test_raw_console_sets_raw_mode_and_restores_exactly() -> None:
    api = FakeConsole()
    raw = RawConsole(0, api)
    raw.enter()
    assert api.state() == raw_state(COOKED)
    raw.leave()
    assert api.state() == COOKED


def test_raw_console_may_be_entered_and_left_again() -> None:
    """As the POSIX RawTerminal: a second enter() or leave() does nothing; entered again,
    what is saved is the console as it is then."""
    api = FakeConsole()
    raw = RawConsole(0, api)
    raw.enter()
    raw.enter()  # still raw: the saved state is still the cooked one
    raw.leave()
    raw.leave()
    assert api.state() == COOKED
    api.modes[IN_HANDLE] = COOKED_IN & ~0x40  # the user turned quick edit off meanwhile
    raw.enter()
    raw.leave()
    assert api.state() == ConsoleState(COOKED_IN & ~0x40, COOKED_OUT, OEM_US, OEM_US)


def test_a_console_without_disable_newline_auto_return_gets_vt_alone() -> None:
    api = FakeConsole(refused=frozenset({raw_output_modes(COOKED_OUT)[0]}))
    raw = RawConsole(0, api)
    raw.enter()
    try:
        assert api.modes[OUT_HANDLE] == COOKED_OUT | 0x1 | ENABLE_VIRTUAL_TERMINAL_PROCESSING
        assert not api.modes[OUT_HANDLE] & DISABLE_NEWLINE_AUTO_RETURN
    finally:
        raw.leave()
    assert api.state() == COOKED


@pytest.mark.parametrize(
    "refused",
    [frozenset(raw_output_modes(COOKED_OUT)), frozenset({raw_input_mode(COOKED_IN)})],
    ids=["no VT output", "no VT input"],
)
def test_a_console_without_vt_is_an_error_and_is_left_as_it_was(refused: frozenset[int]) -> None:
    api = FakeConsole(refused=refused)
    raw = RawConsole(0, api)
    with pytest.raises(PydError, match="VT sequences") as e:
        raw.enter()
    assert "Windows Terminal" in e.value.hint
    assert api.state() == COOKED
    raw.leave()  # nothing more to undo
    assert api.state() == COOKED


def test_no_console_is_an_error_before_anything_is_set() -> None:
    api = FakeConsole(consoles=False)
    with pytest.raises(PydError, match="Windows console"):
        RawConsole(0, api).enter()
    assert api.calls == []


def test_consoles_wants_every_stream_to_be_one() -> None:
    assert consoles(FakeConsole(), (0, 1, 2))
    assert not consoles(FakeConsole(), (0, 1, 7))  # 7: a file, or NUL (isatty says yes)
    assert not consoles(FakeConsole(consoles=False), (0, 1, 2))


# -- a framed session's stdin: a queue, which the end of the command wakes ----------------------


def test_queued_stdin_gives_pieces_then_its_end_and_counts_what_was_taken() -> None:
    taken: list[int] = []
    q = QueuedStdin(taken.append)
    q.put(b"ab")
    q.put(b"")  # nothing: not the end
    q.put(b"cde")
    q.end()
    assert [q.read(), q.read(), q.read()] == [b"ab", b"cde", b""]
    assert taken == [2, 3]


def test_stopping_queued_stdin_wakes_a_waiting_read() -> None:
    """What a pipe's read cannot do on Windows: the command has ended, its stdin reader is
    waiting for more, and must end now, not when the client next sends something."""
    q = QueuedStdin(lambda n: None)
    got: list[bytes | None] = []
    reader = threading.Thread(target=lambda: got.append(q.read()))
    reader.start()
    reader.join(0.05)
    assert reader.is_alive()  # waiting
    q.stop()
    reader.join(5)
    assert not reader.is_alive() and got == [None]
    q.put(b"late")
    assert q.read() is None  # stopped for good


def test_a_session_with_queued_stdin_ends_with_its_command_without_stdin_ending(
    transport: paramiko.Transport,
) -> None:
    """The agent's framed session (exec_server): a command that never reads stdin ends, its
    client never ends stdin (a terminal), and no stdin reader is left behind."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    q = QueuedStdin(lambda n: None)  # nothing comes: its reader waits until stopped
    session = GuestSession(
        transport,
        GuestCommand("/", ("sh", "-c", "exit 3")),
        HostStreams(-1, out_w, err_w),
        None,
        held_by_client(lambda: None),
        stdin=q,
    )
    before = set(threading.enumerate())  # other tests' clients leave theirs (a terminal's)
    try:
        assert session.run() == 3
    finally:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
    feeds = [t for t in set(threading.enumerate()) - before if t.name == "pyd-docker-in"]
    for t in feeds:
        t.join(5)
    assert not any(t.is_alive() for t in feeds)
