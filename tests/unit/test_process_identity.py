"""A recorded process is recognised by pid and start time; a reused pid is not it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pyd.host.process_identity import (
    ProcessIdentity,
    identify,
    is_running,
    read_identity,
    write_identity,
)


def test_this_process_is_identified_and_running() -> None:
    me = identify(os.getpid())
    assert me is not None and me.pid == os.getpid()
    assert is_running(me)


def test_the_same_pid_with_another_start_time_is_not_the_recorded_process() -> None:
    me = identify(os.getpid())
    assert me is not None
    assert not is_running(ProcessIdentity(me.pid, me.started - 3600))
    assert not is_running(ProcessIdentity(me.pid, me.started + 1))


def test_a_process_that_exited_is_not_running() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    recorded = identify(proc.pid)
    assert recorded is not None and is_running(recorded)
    proc.communicate(b"")
    assert not is_running(recorded)
    assert identify(proc.pid) is None


def test_an_unreaped_child_counts_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = identify(proc.pid)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert recorded is None or not is_running(recorded)
    proc.wait()


def test_records_round_trip_private_and_garbage_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "qemu.proc"
    record = ProcessIdentity(1234, 1764780000.25)
    write_identity(path, record)
    assert read_identity(path) == record
    assert path.stat().st_mode & 0o777 == 0o600
    for junk in (
        "",
        "12",
        "{}",
        '{"pid": "1", "started": 1}',
        '{"pid": true, "started": 1}',
        '{"pid": 0, "started": 1}',
        '{"pid": 5, "started": "x"}',
        "[1, 2]",
    ):
        path.write_text(junk)
        assert read_identity(path) is None, junk
    assert read_identity(tmp_path / "missing") is None


def test_a_step_of_the_wall_clock_does_not_unmatch_a_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Linux psutil's create_time is the kernel's boot time + start ticks, and the boot
    time moves with every wall-clock step; the record counts from boot and keeps matching."""
    me = identify(os.getpid())
    assert me is not None
    assert 0 < me.started < time.clock_gettime(time.CLOCK_BOOTTIME) + 1
    real = psutil.Process.create_time
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: real(self) + 3600)
    assert is_running(me)
    assert identify(os.getpid()) == me
