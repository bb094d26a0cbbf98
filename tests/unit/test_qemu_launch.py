"""How direct QEMU is launched per platform (the pure plan, for linux, darwin and win32), and
the detached launch run for real here with a stand-in for QEMU (on Windows flags too, with
Popen's refusal of a breakaway played here)."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from pyd.errors import PydError
from pyd.host.private_files import QEMU_UMASK
from pyd.host.process_identity import identify, is_running, read_identity
from pyd.host.procs import end_process
from pyd.vm.backends.qemu_launch import LaunchStyle, launch_plan, run_daemonized, run_detached


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_posix_daemonizes_with_an_owner_only_umask(platform: str) -> None:
    plan = launch_plan(platform, {})
    assert plan.style is LaunchStyle.DAEMONIZE
    assert plan.argv_extra == ("-daemonize",)
    assert (plan.creationflags, plan.start_new_session, plan.umask) == (0, False, QEMU_UMASK)


def test_windows_starts_qemu_detached_without_a_console() -> None:
    plan = launch_plan("win32", {})
    assert plan.style is LaunchStyle.DETACHED
    assert plan.argv_extra == ()  # no -daemonize on Windows
    # DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW, and out of the
    # caller's job object (CREATE_BREAKAWAY_FROM_JOB), as every process pyd leaves running
    assert plan.creationflags == 0x8 | 0x200 | 0x08000000 | 0x01000000 == 0x09000208
    assert (plan.start_new_session, plan.umask) == (False, -1)
    assert launch_plan("win32", {"PYD_QEMU_LAUNCH": "daemonize"}) == plan


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_the_switch_forces_the_detached_launch_on_posix(platform: str) -> None:
    plan = launch_plan(platform, {"PYD_QEMU_LAUNCH": "detached"})
    assert plan.style is LaunchStyle.DETACHED and plan.argv_extra == ()
    assert (plan.creationflags, plan.start_new_session, plan.umask) == (0, True, QEMU_UMASK)


# -- the edge, with a Python stand-in for QEMU ---------------------------------------------

_PLAN = launch_plan(sys.platform, {"PYD_QEMU_LAUNCH": "detached"})


def _stand_in(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_detached_start_records_the_identity_once_ready(tmp_path: Path) -> None:
    ready_file = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready_file)!r}).touch(); time.sleep(60)"
    identity = run_detached(
        _stand_in(code), _PLAN, tmp_path / "qemu.log", tmp_path / "qemu.proc",
        ready=ready_file.exists, timeout=20,
    )  # fmt: skip
    try:
        assert read_identity(tmp_path / "qemu.proc") == identity
        assert is_running(identity)
        for name in ("qemu.log", "qemu.proc"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    finally:
        assert end_process(identity, timeout=5)
    assert not is_running(identity)


def test_a_qemu_that_exits_first_fails_the_start_with_its_log(tmp_path: Path) -> None:
    code = "import sys; print('qemu: -drive: Could not open disk', file=sys.stderr); sys.exit(1)"
    with pytest.raises(PydError, match="Could not open disk") as e:
        run_detached(
            _stand_in(code), _PLAN, tmp_path / "qemu.log", tmp_path / "qemu.proc",
            ready=lambda: False, timeout=20,
        )  # fmt: skip
    assert str(tmp_path / "qemu.log") in (e.value.hint or "")
    assert not (tmp_path / "qemu.proc").exists()


def test_a_qemu_whose_monitor_never_answers_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(PydError, match="did not answer"):
        run_detached(
            _stand_in("import time; print('started', flush=True); time.sleep(60)"), _PLAN,
            tmp_path / "qemu.log", tmp_path / "qemu.proc", ready=lambda: False, timeout=0.5,
        )  # fmt: skip
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "qemu.proc").exists()
    pid = None
    for p in psutil.process_iter(["cmdline"]):
        if p.info["cmdline"] and "print('started'" in " ".join(p.info["cmdline"]):
            pid = p.pid
    assert pid is None or identify(pid) is None, "the stand-in still runs"


@pytest.mark.skipif(sys.platform == "win32", reason="-daemonize is POSIX-only")
def test_a_daemonized_start_that_fails_says_why(tmp_path: Path) -> None:
    plan = launch_plan(sys.platform, {})
    argv = _stand_in("import sys; sys.stderr.write('bad option'); sys.exit(1)")
    with pytest.raises(PydError, match="QEMU failed to start: bad option"):
        run_daemonized(argv, plan, hint="h")  # "-daemonize" lands in the stand-in's sys.argv


class _AccessDenied(OSError):
    """Windows' OSError for ERROR_ACCESS_DENIED (only Windows' OSError has `winerror`)."""

    winerror = 5


def test_a_job_that_forbids_breakaway_gets_qemu_started_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' CreateProcess fails with ERROR_ACCESS_DENIED (5) when the caller's job
    forbids breakaway: QEMU is started again without CREATE_BREAKAWAY_FROM_JOB. Played here
    by a Popen that refuses the breakaway the way Windows does and runs the stand-in for
    the rest as POSIX can (a new session: POSIX takes no creationflags)."""
    real_popen = subprocess.Popen
    flags: list[int] = []

    def windows_popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        flags.append(kwargs["creationflags"])
        if kwargs["creationflags"] & 0x01000000:
            raise _AccessDenied(13, "Access is denied")
        return real_popen(argv, **(kwargs | {"creationflags": 0, "start_new_session": True}))

    monkeypatch.setattr(subprocess, "Popen", windows_popen)
    ready_file = tmp_path / "ready"
    code = f"import pathlib, time; pathlib.Path({str(ready_file)!r}).touch(); time.sleep(60)"
    identity = run_detached(
        _stand_in(code), launch_plan("win32", {}), tmp_path / "qemu.log",
        tmp_path / "qemu.proc", ready=ready_file.exists, timeout=20,
    )  # fmt: skip
    try:
        assert flags == [0x09000208, 0x08000208]
        assert read_identity(tmp_path / "qemu.proc") == identity and is_running(identity)
    finally:
        assert end_process(identity, timeout=5)
