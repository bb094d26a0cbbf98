"""A Windows console in raw mode for an interactive `pyd docker` (the guest's PTY does the
terminal's work, as with `ssh -t`), and how to tell a console from what only looks like one.

The pure core (values in, values out: the console modes and code pages to set, what to say
when there is no console) runs on every OS; the edge (Win32Console: kernel32 through ctypes)
exists on Windows only. RawConsole keeps the state and takes either, so its logic is tested
anywhere with a stand-in.

In raw mode, input: no line editing, no echo, and Ctrl-C read as the byte 0x03 for the
guest's PTY to make a signal of (no CTRL_C_EVENT here), keys as VT sequences (arrows as
ESC [ A ...). Output: VT sequences interpreted, and no carriage return added after a line
feed (the guest's PTY sends CR LF itself). Both in UTF-8, the guest's encoding. Everything is
put back as it was on leave().
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pyd.errors import EnvironmentProblem, PydError

# Console modes, as documented for SetConsoleMode (consoleapi.h).
ENABLE_PROCESSED_INPUT = 0x0001
ENABLE_LINE_INPUT = 0x0002
ENABLE_ECHO_INPUT = 0x0004
ENABLE_VIRTUAL_TERMINAL_INPUT = 0x0200
ENABLE_PROCESSED_OUTPUT = 0x0001
ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004
DISABLE_NEWLINE_AUTO_RETURN = 0x0008
CP_UTF8 = 65001

# Git Bash's mintty (and Cygwin's) give a program pipes named like this instead of a console.
_MINTTY_PIPE_PREFIXES = ("\\msys-", "\\cygwin-")


@dataclass(frozen=True)
class ConsoleState:
    """What raw mode changes: the input and output handles' modes, and both code pages."""

    input_mode: int
    output_mode: int
    input_cp: int
    output_cp: int


def raw_input_mode(mode: int) -> int:
    """The input mode for raw use, from the current one (other bits, such as quick edit,
    are the user's and kept)."""
    cleared = ENABLE_PROCESSED_INPUT | ENABLE_LINE_INPUT | ENABLE_ECHO_INPUT
    return (mode & ~cleared) | ENABLE_VIRTUAL_TERMINAL_INPUT


def raw_output_modes(mode: int) -> list[int]:
    """The output modes for raw use, best first: consoles before Windows 10 1709 refuse
    DISABLE_NEWLINE_AUTO_RETURN (the documented fallback: VT processing alone)."""
    vt = mode | ENABLE_PROCESSED_OUTPUT | ENABLE_VIRTUAL_TERMINAL_PROCESSING
    return [vt | DISABLE_NEWLINE_AUTO_RETURN, vt]


def raw_state(saved: ConsoleState) -> ConsoleState:
    """The state to set for raw use (the output mode: the first of raw_output_modes)."""
    return ConsoleState(
        raw_input_mode(saved.input_mode),
        raw_output_modes(saved.output_mode)[0],
        CP_UTF8,
        CP_UTF8,
    )


def is_mintty_pipe(name: str) -> bool:
    """Whether a pipe's name (as GetFileInformationByHandleEx gives it) is mintty's or
    Cygwin's pseudo-terminal: `\\msys-1888ae32e00d56aa-pty0-from-master`."""
    return name.startswith(_MINTTY_PIPE_PREFIXES) and "-pty" in name


def no_console_error(platform: str, stdin_pipe: str | None) -> PydError | None:
    """What to say when `-t` is asked and stdin is no terminal (`platform`: sys.platform's
    values): on Windows, for mintty's pipes only (`stdin_pipe`: the name of the pipe on
    stdin, if it is one), whose user sees a terminal; any other stdin (a file, a pipe from a
    program) goes on without a PTY, as on POSIX, where nothing is said."""
    if platform != "win32" or stdin_pipe is None or not is_mintty_pipe(stdin_pipe):
        return None
    return EnvironmentProblem(
        "a terminal (-t) needs a Windows console, and mintty (Git Bash) gives pyd pipes",
        hint="run it from Windows Terminal, PowerShell or cmd, or prefix it with `winpty` "
        "in Git Bash (`winpty pyd docker run -it ...`), or leave out -t",
    )


def no_vt_error() -> PydError:
    return EnvironmentProblem(
        "this console does not take VT sequences, which a terminal in the guest needs",
        hint="use Windows Terminal, or the console of Windows 10 1709 or later; or leave out -t",
    )


class ConsoleApi(Protocol):
    """The few console calls raw mode needs (Win32Console on Windows; a stand-in in tests).
    Handles are ints; a failed call returns None or False."""

    def handle(self, fd: int) -> int: ...  # the Windows handle behind a descriptor
    def output_handle(self) -> int: ...  # this process's console output (STD_OUTPUT_HANDLE)
    def get_mode(self, handle: int) -> int | None: ...
    def set_mode(self, handle: int, mode: int) -> bool: ...
    def get_code_pages(self) -> tuple[int, int]: ...  # input, output
    def set_code_pages(self, input_cp: int, output_cp: int) -> bool: ...


class RawConsole:
    """The console on `fd` (its input) and this process's console output in raw mode
    between enter() and leave(); both may be called again, as the POSIX RawTerminal's."""

    def __init__(self, fd: int, api: ConsoleApi) -> None:
        self.fd = fd
        self._api = api
        self._saved: ConsoleState | None = None

    def enter(self) -> None:
        if self._saved is not None:
            return
        api = self._api
        handles = api.handle(self.fd), api.output_handle()
        in_mode, out_mode = (api.get_mode(h) for h in handles)
        if in_mode is None or out_mode is None:  # nothing set yet, nothing to undo
            raise EnvironmentProblem(
                "a terminal (-t) needs a Windows console on stdin and stdout",
                hint="run it from Windows Terminal, PowerShell or cmd, or leave out -t",
            )
        saved = ConsoleState(in_mode, out_mode, *api.get_code_pages())
        raw = raw_state(saved)
        self._saved = saved  # from here on, leave() undoes whatever was set
        if not any(api.set_mode(handles[1], m) for m in raw_output_modes(out_mode)):
            self.leave()
            raise no_vt_error()
        if not api.set_mode(handles[0], raw.input_mode):
            self.leave()
            raise no_vt_error()  # ENABLE_VIRTUAL_TERMINAL_INPUT refused: an old console
        api.set_code_pages(raw.input_cp, raw.output_cp)  # best effort: ASCII works anyway

    def leave(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        # A console that went away (its window closed) has nothing left to restore: the
        # calls then fail, and that is all.
        api = self._api
        api.set_mode(api.handle(self.fd), saved.input_mode)
        api.set_mode(api.output_handle(), saved.output_mode)
        api.set_code_pages(saved.input_cp, saved.output_cp)


def consoles(api: ConsoleApi, fds: Sequence[int]) -> bool:
    """Whether every fd is a console, input or screen buffer (os.isatty also says yes for
    NUL, a character device)."""
    return all(api.get_mode(api.handle(fd)) is not None for fd in fds)


if sys.platform == "win32":
    import ctypes
    import msvcrt
    from ctypes import wintypes

    _kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    _kernel32.GetStdHandle.argtypes = [wintypes.DWORD]
    _kernel32.GetStdHandle.restype = wintypes.HANDLE
    _kernel32.GetConsoleMode.argtypes = [wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD)]
    _kernel32.GetConsoleMode.restype = wintypes.BOOL
    _kernel32.SetConsoleMode.argtypes = [wintypes.HANDLE, wintypes.DWORD]
    _kernel32.SetConsoleMode.restype = wintypes.BOOL
    _kernel32.GetConsoleCP.argtypes = []
    _kernel32.GetConsoleCP.restype = wintypes.UINT
    _kernel32.GetConsoleOutputCP.argtypes = []
    _kernel32.GetConsoleOutputCP.restype = wintypes.UINT
    _kernel32.SetConsoleCP.argtypes = [wintypes.UINT]
    _kernel32.SetConsoleCP.restype = wintypes.BOOL
    _kernel32.SetConsoleOutputCP.argtypes = [wintypes.UINT]
    _kernel32.SetConsoleOutputCP.restype = wintypes.BOOL
    _kernel32.GetFileType.argtypes = [wintypes.HANDLE]
    _kernel32.GetFileType.restype = wintypes.DWORD
    _kernel32.GetFileInformationByHandleEx.argtypes = [
        wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, wintypes.DWORD,
    ]  # fmt: skip
    _kernel32.GetFileInformationByHandleEx.restype = wintypes.BOOL

    _STD_OUTPUT_HANDLE = wintypes.DWORD(-11 & 0xFFFFFFFF)
    _FILE_TYPE_PIPE = 3
    _FILE_NAME_INFO = 2  # FILE_INFO_BY_HANDLE_CLASS.FileNameInfo
    _NAME_BYTES = 1024

    class Win32Console:
        """ConsoleApi through kernel32."""

        def handle(self, fd: int) -> int:
            try:
                return msvcrt.get_osfhandle(fd)
            except OSError:
                return -1  # INVALID_HANDLE_VALUE: GetConsoleMode fails on it

        def output_handle(self) -> int:
            handle = _kernel32.GetStdHandle(_STD_OUTPUT_HANDLE)
            return -1 if handle is None else int(handle)

        def get_mode(self, handle: int) -> int | None:
            mode = wintypes.DWORD()
            if not _kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
                return None
            return int(mode.value)

        def set_mode(self, handle: int, mode: int) -> bool:
            return bool(_kernel32.SetConsoleMode(handle, mode))

        def get_code_pages(self) -> tuple[int, int]:
            return int(_kernel32.GetConsoleCP()), int(_kernel32.GetConsoleOutputCP())

        def set_code_pages(self, input_cp: int, output_cp: int) -> bool:
            done = bool(_kernel32.SetConsoleCP(input_cp))
            return bool(_kernel32.SetConsoleOutputCP(output_cp)) and done

    def pipe_name(fd: int) -> str | None:
        """The name of the pipe on `fd` (`\\msys-...-pty0-from-master`), None for anything
        else: a FILE_NAME_INFO (a DWORD length in bytes, then UTF-16)."""
        try:
            handle = msvcrt.get_osfhandle(fd)
        except OSError:
            return None
        if _kernel32.GetFileType(handle) != _FILE_TYPE_PIPE:
            return None
        buf = ctypes.create_string_buffer(4 + _NAME_BYTES)
        if not _kernel32.GetFileInformationByHandleEx(handle, _FILE_NAME_INFO, buf, len(buf)):
            return None
        length = int.from_bytes(buf.raw[:4], "little")
        return buf.raw[4 : 4 + min(length, _NAME_BYTES)].decode("utf-16-le", "replace")
