"""How pyd starts the processes it runs on Windows and POSIX: those it leaves running after it
exits (the agent's keeper, the agent, QEMU), so that no terminal, console window or job object
ties them to the command that started them; and the short-lived console programs it waits for
(qemu-img, `qemu --version`), so that no console window flashes up.

Pure (the platform is a parameter): what Popen is given per OS, so tests on Linux check the
exact Windows flags; launch_detached is the edge, with the one retry Windows may need."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

# The Win32 process creation flags (subprocess names them only on Windows).
DETACHED_PROCESS = 0x00000008  # no console at all, not even the parent's
CREATE_NEW_PROCESS_GROUP = 0x00000200  # a Ctrl+C in the user's console does not reach it
CREATE_BREAKAWAY_FROM_JOB = 0x01000000  # out of the caller's job object (see detached)
CREATE_NO_WINDOW = 0x08000000  # a console of its own that is never shown
ERROR_ACCESS_DENIED = 5  # CreateProcess's answer to a breakaway the job forbids


@dataclass(frozen=True)
class LaunchFlags:
    """Popen's `creationflags` (non-zero only on Windows: POSIX refuses any) and
    `start_new_session` (POSIX: a session of its own, so a closing terminal's SIGHUP or
    a Ctrl+C in it does not reach the process)."""

    creationflags: int = 0
    start_new_session: bool = False


def detached(platform: str) -> LaunchFlags:
    """A process that outlives the command that starts it (`pyd start` -> the keeper; QEMU).
    On Windows out of the caller's job object too: an OpenSSH session or a CI runner puts
    its commands in a job that it kills when it closes, and the agent (the keeper's child)
    is then out of it as well. A job that forbids breakaway refuses the start:
    launch_detached then starts it without (breakaway_refused)."""
    if platform == "win32":
        # CREATE_NO_WINDOW is moot beside DETACHED_PROCESS, but says what is meant should
        # the launcher in between (a venv's python.exe) pass the flags on by itself.
        console = DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
        return LaunchFlags(console | CREATE_BREAKAWAY_FROM_JOB)
    return LaunchFlags(start_new_session=True)


def hidden_child(platform: str) -> LaunchFlags:
    """A process a detached one starts (the keeper -> the agent and its standby). On
    Windows not DETACHED_PROCESS: a console program started by a process without a console
    gets a window of its own, so the agent gets a console that is never shown, which the
    console programs it starts in turn (ssh.exe, sftp-server.exe) share instead of opening
    windows. POSIX: the keeper's session, which is already its own."""
    if platform == "win32":
        return LaunchFlags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW)
    return LaunchFlags()


def no_window(platform: str) -> LaunchFlags:
    """A console program pyd runs and waits for (qemu-img, `qemu --version`): on Windows
    without a console window flashing up when pyd itself has none (a GUI or the agent)."""
    return LaunchFlags(CREATE_NO_WINDOW) if platform == "win32" else LaunchFlags()


def breakaway_refused(flags: LaunchFlags, winerror: int | None) -> LaunchFlags | None:
    """The flags to try again with when a start with `flags` failed with Windows error
    `winerror` (None: not a Windows error) because the caller's job forbids breakaway:
    the same without CREATE_BREAKAWAY_FROM_JOB (the process then ends with that job). None
    when a retry cannot help."""
    if winerror != ERROR_ACCESS_DENIED or not flags.creationflags & CREATE_BREAKAWAY_FROM_JOB:
        return None
    return replace(flags, creationflags=flags.creationflags & ~CREATE_BREAKAWAY_FROM_JOB)


# -- the edge ------------------------------------------------------------------------------

_Stream = int | IO[bytes] | None


def launch_detached(
    argv: Sequence[str],
    flags: LaunchFlags,
    *,
    stdin: _Stream = subprocess.DEVNULL,
    stdout: _Stream = None,
    stderr: _Stream = None,
    cwd: Path | None = None,
    umask: int = -1,
) -> subprocess.Popen[bytes]:
    """Popen with `flags` (detached()), again without breakaway when the job refuses it."""
    while True:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                cwd=cwd,
                close_fds=True,
                creationflags=flags.creationflags,
                start_new_session=flags.start_new_session,
                umask=umask,
            )
        except OSError as e:
            # OSError.winerror exists on Windows only: None here is "not a Windows error".
            retry = breakaway_refused(flags, getattr(e, "winerror", None))
            if retry is None:
                raise
            flags = retry
