"""Signalling and killing a recorded process only while its pid and start time still name
it: a sleeper whose pid a record with another start time names is left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.host.process_control import kill_process, read_pid_record, terminate_process
from pyd.host.process_identity import ProcessIdentity, identify, write_identity


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _named(proc: subprocess.Popen[bytes]) -> ProcessIdentity:
    found = identify(proc.pid)
    assert found is not None
    return found


def test_a_record_with_another_start_time_is_not_signalled_or_killed(
    sleeper: subprocess.Popen[bytes],
) -> None:
    now = _named(sleeper)
    before = ProcessIdentity(now.pid, now.started - 60)  # the pid's earlier owner
    assert not terminate_process(before)
    assert not kill_process(before)
    assert sleeper.poll() is None


def test_the_recorded_process_is_terminated(sleeper: subprocess.Popen[bytes]) -> None:
    assert terminate_process(_named(sleeper))
    expected = -signal.SIGTERM if sys.platform != "win32" else signal.SIGTERM
    assert sleeper.wait(timeout=10) == expected


def test_the_recorded_process_is_killed(sleeper: subprocess.Popen[bytes]) -> None:
    named = _named(sleeper)
    assert kill_process(named)
    sleeper.wait(timeout=10)
    assert not kill_process(named)  # gone: nothing to kill


def test_pid_records_new_and_old(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = tmp_path / "agent.pid"
    assert read_pid_record(path) is None  # missing
    write_identity(path, ProcessIdentity(sleeper.pid, 12.5))
    assert read_pid_record(path) == ProcessIdentity(sleeper.pid, 12.5)  # as recorded
    path.write_text(f"{sleeper.pid}\n")  # an older agent's bare pid
    assert read_pid_record(path) == _named(sleeper)
    for junk in ("", "-3\n", "0\n", "x\n", '{"pid": "1"}'):
        path.write_text(junk)
        assert read_pid_record(path) is None, junk
    path.write_text(f"{os.getpid()}")
    assert read_pid_record(path) == identify(os.getpid())
