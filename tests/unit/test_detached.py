"""How pyd starts the processes that outlive it (the keeper, the agent) and the console
programs it waits for, per OS: the exact Popen flags, checked here for Windows too (with the
start again without breakaway that a job forbidding it needs), and the POSIX ones run for
real."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pyd.host import detached as detached_module
from pyd.host.detached import (
    CREATE_BREAKAWAY_FROM_JOB,
    LaunchFlags,
    breakaway_refused,
    detached,
    hidden_child,
    launch_detached,
    no_window,
)

# DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW
WIN_DETACHED = 0x00000008 | 0x00000200 | 0x08000000


@pytest.mark.parametrize(
    ("platform", "flags"),
    [
        ("linux", LaunchFlags(0, start_new_session=True)),
        ("darwin", LaunchFlags(0, start_new_session=True)),
        # ... | CREATE_BREAKAWAY_FROM_JOB: out of the job an SSH session or CI runner kills.
        ("win32", LaunchFlags(WIN_DETACHED | 0x01000000, start_new_session=False)),
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


@pytest.mark.parametrize(
    ("platform", "flags"),
    [("linux", LaunchFlags()), ("darwin", LaunchFlags()), ("win32", LaunchFlags(0x08000000))],
)
def test_a_console_program_pyd_waits_for_gets_no_window(platform: str, flags: LaunchFlags) -> None:
    assert no_window(platform) == flags


def test_a_job_that_forbids_breakaway_gets_the_same_start_without_it() -> None:
    flags = detached("win32")
    assert breakaway_refused(flags, 5) == LaunchFlags(WIN_DETACHED)  # ERROR_ACCESS_DENIED
    assert breakaway_refused(flags, 2) is None  # ERROR_FILE_NOT_FOUND: no retry helps
    assert breakaway_refused(flags, None) is None  # not a Windows error
    assert breakaway_refused(LaunchFlags(WIN_DETACHED), 5) is None  # nothing to drop
    assert breakaway_refused(detached("linux"), 5) is None


class _AccessDenied(OSError):
    winerror = 5  # what Windows sets on the OSError of a failed CreateProcess


class _RefusingPopen:
    """subprocess.Popen as CreateProcess answers inside a job without breakaway: winerror 5
    while the flag is asked for; the start is recorded otherwise."""

    calls: ClassVar[list[int]] = []

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        _RefusingPopen.calls.append(kwargs["creationflags"])
        if kwargs["creationflags"] & CREATE_BREAKAWAY_FROM_JOB:
            raise _AccessDenied(13, "Access is denied")


def test_launch_detached_starts_again_without_breakaway_when_the_job_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _RefusingPopen.calls = []
    monkeypatch.setattr(detached_module.subprocess, "Popen", _RefusingPopen)
    proc = launch_detached(["qemu"], detached("win32"))
    assert isinstance(proc, _RefusingPopen)
    assert _RefusingPopen.calls == [WIN_DETACHED | 0x01000000, WIN_DETACHED]


def test_launch_detached_passes_other_errors_on(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        launch_detached([str(tmp_path / "missing")], detached(sys.platform))


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX flags")
def test_launch_detached_runs_in_a_session_of_its_own_with_its_output_where_asked(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with out.open("wb") as f:
        proc = launch_detached(
            [sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"],
            detached(sys.platform),
            stdout=f,
            cwd=tmp_path,
        )
    assert proc.wait(timeout=30) == 0
    assert out.read_bytes() == b"True\n"
