"""A warm start's critical path (issue 18): the agent starts up while the VM is restored
(lifecycle.agent_proc.launch_around, the restoring marker), and a restored guest's sshd is
tried with a handshake at once, not probed first (ssh.connect.wait_for_ssh)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pyd.errors import PydError
from pyd.instance.files import InstanceFiles
from pyd.instance.saved_state import (
    RESTORE_GRACE,
    RestoreMark,
    mark_text,
    parse_mark,
    read_mark,
    write_mark,
)
from pyd.lifecycle import agent_proc
from pyd.ssh import connect as connect_module
from pyd.ssh.connect import SSHTarget, wait_for_ssh

TARGET = SSHTarget("127.0.0.1", 1, "root", Path("/nonexistent/key"), "ssh-ed25519 AAAA")


class StartingKeeper:
    """The launched keeper's process as Popen shows it: alive, taking its lock only at the
    third look (a keeper still importing when a restore has already failed)."""

    def __init__(self, done: list[str]) -> None:
        self.done = done
        self.looks = 0

    def poll(self) -> int | None:
        self.looks += 1
        if self.looks == 3:
            self.done.append("keeper locked")
        return None


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[InstanceFiles, list[str]]:
    """An instance directory whose agent launch and stop are recorded, not run."""
    done: list[str] = []
    inst = InstanceFiles(tmp_path)

    def launch(f: InstanceFiles, name: str) -> agent_proc.Launched:
        done.append(f"launch restoring={f.restoring.exists()}")
        return agent_proc.Launched(StartingKeeper(done), "token")  # type: ignore[arg-type]

    monkeypatch.setattr(agent_proc, "launch_agent", launch)
    monkeypatch.setattr(agent_proc, "stop_agent", lambda f, *a: done.append("stop"))
    monkeypatch.setattr(agent_proc, "keeper_running", lambda f: "keeper locked" in done)
    return inst, done


def test_the_agent_is_launched_before_the_restore_and_told_of_it(
    files: tuple[InstanceFiles, list[str]],
) -> None:
    inst, done = files

    def restore() -> None:
        done.append(f"restore restoring={inst.restoring.exists()}")
        assert os.stat(inst.restoring).st_mode & 0o777 == 0o600

    launched = agent_proc.launch_around(inst, "dev", restore)
    assert launched.token == "token"
    assert done == ["launch restoring=True", "restore restoring=True"]
    # Over, and kept for an agent that comes up only now: this VM was restored, not booted.
    assert read_mark(inst.restoring, time.time()) == RestoreMark(done=True)


def test_what_the_restore_said_of_its_engine_is_kept(
    files: tuple[InstanceFiles, list[str]],
) -> None:
    inst, _ = files
    ready = RestoreMark(done=True, engine_ready=True)
    agent_proc.launch_around(inst, "dev", lambda: write_mark(inst.restoring, ready))
    assert read_mark(inst.restoring, time.time()) == ready


def test_a_failed_restore_stops_the_agent_it_launched_and_passes_the_error(
    files: tuple[InstanceFiles, list[str]],
) -> None:
    inst, done = files

    def restore() -> None:
        raise PydError("libvirt: not a save image")

    with pytest.raises(PydError, match="not a save image"):
        agent_proc.launch_around(inst, "dev", restore)
    # Stopped once its keeper can be asked, not before (it would start its agent later).
    assert done == ["launch restoring=True", "keeper locked", "stop"]
    assert not inst.restoring.exists()


def test_the_restoring_marker_counts_only_while_fresh(tmp_path: Path) -> None:
    marker = tmp_path / "restoring"
    assert read_mark(marker, time.time()) is None
    write_mark(marker, RestoreMark(done=False))
    assert os.stat(marker).st_mode & 0o777 == 0o600
    now = marker.stat().st_mtime
    assert read_mark(marker, now + 1) == RestoreMark(done=False)
    # One a killed `pyd start` left behind keeps no agent waiting for ever.
    assert read_mark(marker, now + RESTORE_GRACE + 1) is None


@pytest.mark.parametrize(
    "mark",
    [RestoreMark(False), RestoreMark(True), RestoreMark(True, engine_ready=True)],
)
def test_a_mark_reads_back_as_written(mark: RestoreMark) -> None:
    assert parse_mark(mark_text(mark)) == mark


@pytest.mark.parametrize("text", ["", "1\n", "restor", "booted engine-ready"])
def test_a_marker_cut_short_or_foreign_is_no_mark(text: str) -> None:
    assert parse_mark(text) is None


class Attempts:
    """wait_for_ssh's probes and handshakes, with what each handshake raises in turn."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fails: list[Exception]) -> None:
        self.log: list[str] = []
        self.fails = fails
        monkeypatch.setattr(connect_module, "banner_ready", self.banner)
        monkeypatch.setattr(connect_module, "connect", self.connect)

    def banner(self, host: str, port: int, timeout: float = 1.0) -> bool:
        self.log.append("probe")
        return True

    def connect(self, target: SSHTarget, timeout: float = 10.0) -> object:
        self.log.append("handshake")
        if self.fails:
            raise self.fails.pop(0)
        return "client"


def test_a_booting_guest_is_probed_before_each_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = Attempts(monkeypatch, [EOFError()])
    assert wait_for_ssh(TARGET, time.monotonic() + 5, poll=0.01) == "client"
    assert attempts.log == ["probe", "handshake", "probe", "handshake"]


def test_a_restored_guest_gets_a_handshake_at_once_and_is_probed_after_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempts = Attempts(monkeypatch, [EOFError()])
    assert wait_for_ssh(TARGET, time.monotonic() + 5, poll=0.01, guest_up=True) == "client"
    # No probe first: each costs the guest a whole sshd process.
    assert attempts.log == ["handshake", "probe", "handshake"]
