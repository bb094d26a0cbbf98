"""`pyd start`'s side of the agent with the real processes: the keeper launched detached,
the real agent under it. Without a guest: the agent of a VM that does not exist fails
with its reason; one whose VM "runs" (a pidfile held as QEMU holds it) waits for SSH on a
closed port, which keeps it alive long enough to be killed, restarted and stopped."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from filelock import FileLock

from pyd.agent.keeper import KeeperStatus, read_keeper_status
from pyd.agent.status_file import AgentState, read_status
from pyd.errors import PydError
from pyd.host.loopback import free_loopback_port
from pyd.host.process_control import read_pid_record
from pyd.host.process_identity import ProcessIdentity, identify, is_running, write_identity
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.instance.state import InstanceState, save_state
from pyd.lifecycle import agent_proc
from pyd.lifecycle.agent_proc import (
    Launched,
    StopPath,
    agent_identity,
    agent_running,
    keeper_identity,
    keeper_running,
    launch_agent,
    stop_agent,
    stop_path,
    wait_ready,
)
from tests.unit.fakebackend import RecordingProgress
from tests.unit.polling import until
from tests.unit.qemu_stand_in import holding_pidfile

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and locks")

NAME = "unitkeeper"


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstanceFiles:
    """A direct-QEMU instance that has been provisioned (keys, state.json) in a private
    PYD_HOME; the agent (a child process) finds it there too."""
    monkeypatch.setenv("PYD_HOME", str(tmp_path))
    f = InstanceFiles(tmp_path / "instances" / NAME)
    f.root.mkdir(parents=True)
    f.config.write_text('backend = "qemu"\nmounts = []\n')
    instance_keys(f)
    save_state(f.state, InstanceState(free_loopback_port(), "x86_64-unit", "tcg"))
    return f


@pytest.fixture
def launched(files: InstanceFiles) -> Iterator[Launched]:
    agent: Launched | None = None
    try:
        with holding_pidfile(files.qemu_pid):
            agent = launch_agent(files, NAME)
            yield agent
    finally:
        stop_agent(files, timeout=5)
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()


def test_an_agent_that_fails_with_a_reason_is_not_restarted(files: InstanceFiles) -> None:
    agent = launch_agent(files, NAME)  # no VM at all: the agent says so and exits
    with pytest.raises(PydError, match="VM"):
        wait_ready(files, agent, RecordingProgress())
    assert agent.proc.wait(timeout=30) == 0  # the keeper is done, not looping
    kept = read_keeper_status(files.keeper_status)
    assert kept is not None and kept.restarts == 0 and not kept.gave_up
    assert not keeper_running(files) and not agent_running(files)


def _agent_pid(files: InstanceFiles) -> int:
    agent = read_pid_record(files.agent_pid)
    assert agent is not None
    return agent.pid


def test_a_killed_agent_is_restarted_and_stop_ends_both(
    files: InstanceFiles, launched: Launched
) -> None:
    def waiting_for_ssh() -> bool:
        s = read_status(files.agent_status)
        return agent_running(files) and s is not None and s.state == AgentState.STARTING

    until(waiting_for_ssh, 30, 0.02, "the agent runs")
    first = _agent_pid(files)
    os.kill(first, signal.SIGKILL)
    t0 = time.monotonic()
    until(lambda: agent_running(files) and _agent_pid(files) != first, 30, 0.02, "a new agent")
    print(f"a new agent holds the lock {time.monotonic() - t0:.2f} s after the kill")
    kept = read_keeper_status(files.keeper_status)
    assert kept is not None
    assert (kept.restarts, kept.last_cause) == (1, "signal 9")
    assert keeper_running(files)

    t0 = time.monotonic()
    stop_agent(files, timeout=10)
    assert time.monotonic() - t0 < 5  # SIGTERM passed on and obeyed, no SIGKILL
    assert launched.proc.wait(timeout=10) == 0
    assert not agent_running(files) and not keeper_running(files)
    final = read_status(files.agent_status)
    assert final is not None and final.state == AgentState.STOPPED


def _waiting_for_ssh(files: InstanceFiles) -> bool:
    s = read_status(files.agent_status)
    return agent_running(files) and s is not None and s.state == AgentState.STARTING


def test_keeper_and_agent_record_pid_and_start_time(
    files: InstanceFiles, launched: Launched
) -> None:
    until(lambda: _waiting_for_ssh(files), 30, 0.02, "the agent runs")
    keeper = until(lambda: keeper_identity(files), 30, 0.02, "keeper.json")
    assert keeper == identify(launched.proc.pid)
    assert keeper is not None and is_running(keeper)
    agent = ProcessIdentity.from_json(files.agent_pid.read_text())  # no bare pid any more
    assert agent is not None and is_running(agent) and agent_identity(files) == agent
    kept = read_keeper_status(files.keeper_status)
    assert kept is not None and kept.agent_pid == agent.pid


def _no_signals(*_: object) -> bool:
    raise AssertionError("the request path sends no signal and kills nothing")


@pytest.mark.parametrize("path", [StopPath.SIGNAL, StopPath.REQUEST])
def test_each_stop_path_ends_keeper_and_agent_cleanly(
    files: InstanceFiles, launched: Launched, path: StopPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    until(lambda: _waiting_for_ssh(files), 30, 0.02, "the agent runs")
    # The request path signals nothing; on the signal path only the keeper is signalled,
    # and the agent hears the keeper's word on its stdin. No kill after the timeout.
    if path is StopPath.REQUEST:
        monkeypatch.setattr(agent_proc, "terminate_process", _no_signals)
    monkeypatch.setattr(agent_proc, "kill_process", _no_signals)
    t0 = time.monotonic()
    stop_agent(files, timeout=10, path=path)
    took = time.monotonic() - t0
    print(f"{path.value}: keeper and agent gone {took:.3f} s after the request")
    # Asked and obeyed, no kill after the timeout; and at once (issue 18: the agent's part of
    # `pyd stop` <= 0.5 s), though the agent is in its wait for a booting guest's SSH.
    assert took < 1.0
    assert launched.proc.wait(timeout=10) == 0  # the keeper ended on purpose
    assert not agent_running(files) and not keeper_running(files)
    assert not files.stop_request.exists()
    final = read_status(files.agent_status)
    assert final is not None and final.state == AgentState.STOPPED
    assert "stopping on request" in files.agent_log.read_text()  # the agent's own clean stop


def test_an_agent_without_its_keeper_sees_the_stop_request(
    files: InstanceFiles, launched: Launched, monkeypatch: pytest.MonkeyPatch
) -> None:
    until(lambda: _waiting_for_ssh(files), 30, 0.02, "the agent runs")
    keeper = until(lambda: keeper_identity(files), 30, 0.02, "keeper.json")
    assert keeper is not None
    os.kill(keeper.pid, signal.SIGKILL)  # its agent serves on, unwatched
    launched.proc.wait(timeout=10)
    until(lambda: not keeper_running(files), 10, 0.02, "keeper.lock released")
    assert agent_running(files)
    monkeypatch.setattr(agent_proc, "terminate_process", _no_signals)
    monkeypatch.setattr(agent_proc, "kill_process", _no_signals)
    t0 = time.monotonic()
    stop_agent(files, timeout=10, path=StopPath.REQUEST)
    print(f"an agent without its keeper gone {time.monotonic() - t0:.3f} s after the request")
    assert not agent_running(files)
    final = read_status(files.agent_status)
    assert final is not None and final.state == AgentState.STOPPED


# Another process that holds both locks, as a running keeper and agent would: what a record
# names when its pid was given to someone else (a pid reused after a crash or a reboot).
_HOLDER = (
    "import sys, time\n"
    "from filelock import FileLock\n"
    "locks = [FileLock(path) for path in sys.argv[1:]]\n"
    "for lock in locks:\n"
    "    lock.acquire()\n"
    "print('held', flush=True)\n"
    "time.sleep(300)\n"
)


@pytest.mark.parametrize("path", [StopPath.SIGNAL, StopPath.REQUEST])
@pytest.mark.parametrize("wrong_start", [True, False])
def test_stop_kills_only_the_process_its_records_name(
    files: InstanceFiles, path: StopPath, wrong_start: bool
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(files.keeper_lock), str(files.agent_lock)],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        named = identify(holder.pid)
        assert named is not None
        if wrong_start:  # the recorded process died; its pid is the holder's now
            named = ProcessIdentity(named.pid, named.started - 3600)
        write_identity(files.agent_pid, named)
        kept = KeeperStatus(named.pid, launch="t", started=named.started)
        files.keeper_status.write_text(json.dumps(dataclasses.asdict(kept)))
        stop_agent(files, timeout=0.5, path=path)
        if wrong_start:
            assert holder.poll() is None  # neither SIGTERM nor the kill after the timeout
            assert agent_running(files) and keeper_running(files)
        else:
            # The holder ignores stop.request: killed after the timeout. By SIGTERM first on
            # the signal path, which it obeys.
            assert holder.wait(timeout=5) == -(signal.SIGTERM if path is StopPath.SIGNAL else 9)
    finally:
        holder.kill()
        holder.wait()


def test_a_bare_pid_in_agent_pid_from_an_older_agent_still_reads(files: InstanceFiles) -> None:
    files.agent_pid.write_text(f"{os.getpid()}\n")
    assert read_pid_record(files.agent_pid) == identify(os.getpid())
    files.agent_pid.write_text("not a pid\n")
    assert read_pid_record(files.agent_pid) is None


def test_an_older_keeper_json_without_a_start_time_still_reads(files: InstanceFiles) -> None:
    old = {k: v for k, v in dataclasses.asdict(KeeperStatus(os.getpid())).items()}
    del old["started"]
    files.keeper_status.write_text(json.dumps(old))
    kept = read_keeper_status(files.keeper_status)
    assert kept is not None and (kept.pid, kept.started) == (os.getpid(), 0.0)
    lock = FileLock(str(files.keeper_lock))  # as an older keeper running holds it
    with lock:
        assert keeper_identity(files) == identify(os.getpid())  # named by what runs now
    assert keeper_identity(files) is None  # no keeper holds the lock


@pytest.mark.parametrize(
    ("platform", "env", "path"),
    [
        ("linux", {}, StopPath.SIGNAL),
        ("darwin", {}, StopPath.SIGNAL),
        ("win32", {}, StopPath.REQUEST),  # no signals to ask with
        ("linux", {"PYD_AGENT_STOP": "request"}, StopPath.REQUEST),
        ("darwin", {"PYD_AGENT_STOP": "request"}, StopPath.REQUEST),
        ("win32", {"PYD_AGENT_STOP": "signal"}, StopPath.REQUEST),
        ("linux", {"PYD_AGENT_STOP": "bogus"}, StopPath.SIGNAL),
    ],
)
def test_stop_path_per_platform(platform: str, env: dict[str, str], path: StopPath) -> None:
    assert stop_path(platform, env) is path


def _standby_of(keeper_pid: int) -> bool:
    children = psutil.Process(keeper_pid).children()
    return any("from pyd.agent.main import main" in " ".join(c.cmdline()) for c in children)


def test_an_agent_that_was_the_standby_hears_the_stop_word_after_its_go_word(
    files: InstanceFiles, launched: Launched, monkeypatch: pytest.MonkeyPatch
) -> None:
    until(lambda: _waiting_for_ssh(files), 30, 0.02, "the agent runs")
    until(lambda: _standby_of(launched.proc.pid), 30, 0.1, "a standby (after 5 s)")
    first = _agent_pid(files)
    os.kill(first, signal.SIGKILL)
    until(lambda: agent_running(files) and _agent_pid(files) != first, 30, 0.02, "the standby")
    # SIGTERM to the keeper alone and no stop.request: only the keeper's word on its stdin
    # can stop this agent; no kill after the timeout.
    monkeypatch.setattr(agent_proc, "kill_process", _no_signals)
    t0 = time.monotonic()
    stop_agent(files, timeout=10, path=StopPath.SIGNAL)
    assert time.monotonic() - t0 < 1.0
    assert launched.proc.wait(timeout=10) == 0
    final = read_status(files.agent_status)
    assert final is not None and final.state == AgentState.STOPPED


def _standbys(files: InstanceFiles) -> list[psutil.Process]:
    """Standby agents of this instance, whoever started them."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or ())
        if "from pyd.agent.main import main" in line and str(files.root) in line:
            found.append(p)
    return found


def _idle(p: psutil.Process, over: float = 0.3) -> bool:
    """No CPU time used over `over` seconds."""
    before = sum(p.cpu_times()[:2])
    time.sleep(over)
    return sum(p.cpu_times()[:2]) == before


def test_a_stop_ends_the_waiting_standby_with_the_agent(
    files: InstanceFiles, launched: Launched
) -> None:
    """The keeper tells its standby to go as it passes the stop on, so both end at once:
    `pyd stop` does not wait for one after the other."""
    until(lambda: _waiting_for_ssh(files), 30, 0.02, "the agent runs")
    standby = until(lambda: _standbys(files), 30, 0.1, "a standby (after 5 s)")[0]
    until(lambda: _idle(standby), 30, 0, "the standby done importing, waiting for its word")
    t0 = time.monotonic()
    stop_agent(files, timeout=10, path=StopPath.SIGNAL)
    took = time.monotonic() - t0
    print(f"keeper, agent and standby gone {took:.3f} s after the request")
    assert took < 0.5  # issue 18's target for the agent's part of `pyd stop`
    assert launched.proc.wait(timeout=10) == 0
    assert _standbys(files) == []
