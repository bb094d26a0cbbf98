"""How pyd starts the processes that outlive it (the keeper, the agent), per OS: the exact
Popen flags, checked here for Windows too, and the POSIX ones run for real."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pyd.host.detached import LaunchFlags, detached, hidden_child


@pytest.mark.parametrize(
    ("platform", "flags"),
    [
        ("linux", LaunchFlags(0, start_new_session=True)),
        ("darwin", LaunchFlags(0, start_new_session=True)),
        # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
        ("win32", LaunchFlags(0x00000008 | 0x00000200 | 0x08000000, start_new_session=False)),
    ],
)
def test_the_keeper_is_detached(platform: str, flags: LaunchFlags) -> None:
    assert detached(platform) == flags


@pytest.mark.parametrize(
    ("platform", "flags"),
    [
        ("linux", LaunchFlags(0, start_new_session=False)),  # the keeper's own session
        ("darwin", LaunchFlags(0, start_new_session=False)),
        # CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW: a console never shown, which ssh.exe
        # and sftp-server.exe share; DETACHED_PROCESS would give each a window of its own.
        ("win32", LaunchFlags(0x00000200 | 0x08000000, start_new_session=False)),
    ],
)
def test_the_agent_under_the_keeper_has_a_hidden_console(platform: str, flags: LaunchFlags) -> None:
    assert hidden_child(platform) == flags


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX flags")
def test_a_detached_process_has_a_session_of_its_own() -> None:
    flags = detached(sys.platform)
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"],
        capture_output=True,
        check=True,
        creationflags=flags.creationflags,
        start_new_session=flags.start_new_session,
    ).stdout
    assert out == b"True\n"
