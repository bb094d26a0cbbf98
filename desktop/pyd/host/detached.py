"""Processes pyd leaves running after it exits (the agent's keeper, the agent): how to start
them so that no terminal or console window ties them to the command that started them.

Pure (the platform is a parameter): what Popen is given per OS, so tests on Linux check the
exact Windows flags."""

from __future__ import annotations

from dataclasses import dataclass

# The Win32 process creation flags (subprocess names them only on Windows).
DETACHED_PROCESS = 0x00000008  # no console at all, not even the parent's
CREATE_NEW_PROCESS_GROUP = 0x00000200  # a Ctrl+C in the user's console does not reach it
CREATE_NO_WINDOW = 0x08000000  # a console of its own that is never shown


@dataclass(frozen=True)
class LaunchFlags:
    """Popen's `creationflags` (non-zero only on Windows: POSIX refuses any) and
    `start_new_session` (POSIX: a session of its own, so a closing terminal's SIGHUP or
    a Ctrl+C in it does not reach the process)."""

    creationflags: int = 0
    start_new_session: bool = False


def detached(platform: str) -> LaunchFlags:
    """A process that outlives the command that starts it (`pyd start` -> the keeper)."""
    if platform == "win32":
        # CREATE_NO_WINDOW is moot beside DETACHED_PROCESS, but says what is meant should
        # the launcher in between (a venv's python.exe) pass the flags on by itself.
        return LaunchFlags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW)
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
