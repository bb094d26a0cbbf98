"""`pyd start`'s side of the agent with the real processes: the keeper launched detached,
the real agent under it. Without a guest: the agent of a VM that does not exist fails
with its reason; one whose VM "runs" (a pidfile held as QEMU holds it) waits for SSH on a
closed port, which keeps it alive long enough to be killed, restarted and stopped."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.agent.keeper import read_keeper_status
from pyd.agent.status_file import AgentState, read_status
from pyd.errors import PydError
from pyd.host.loopback import free_loopback_port
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.instance.state import InstanceState, save_state
from pyd.lifecycle.agent_proc import (
    Launched,
    agent_running,
    keeper_running,
    launch_agent,
    stop_agent,
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
    return int(files.agent_pid.read_text())


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
