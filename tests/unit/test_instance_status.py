"""What `pyd status` calls an instance's state, the hint it gives, and what it says about
the agent's keeper: pure functions of the VM's, agent's and keeper's reports."""

from __future__ import annotations

import json
import time

from pyd.agent.keeper import KeeperStatus
from pyd.agent.status_file import AgentState, AgentStatus
from pyd.lifecycle.run_state import RunState
from pyd.lifecycle.status import keeper_note, overall, status_hint
from pyd.vm.backends.base import VMState


def _agent(state: AgentState, error: str = "", hint: str = "") -> AgentStatus:
    return AgentStatus(state, 7).to(state, error, hint)


def test_a_paused_vm_is_paused_whatever_the_agent_says() -> None:
    assert overall(VMState.PAUSED, True, _agent(AgentState.READY)) is RunState.PAUSED
    assert overall(VMState.PAUSED, False, None) is RunState.PAUSED


def test_states_of_a_running_vm() -> None:
    assert overall(VMState.RUNNING, True, _agent(AgentState.READY)) is RunState.RUNNING
    assert overall(VMState.RUNNING, True, _agent(AgentState.RECONNECTING)) is RunState.RECONNECTING
    assert overall(VMState.RUNNING, False, _agent(AgentState.READY)) is RunState.DEGRADED
    # Between a crash and the restart, the keeper lives on: not the user's to fix.
    assert (
        overall(VMState.RUNNING, False, _agent(AgentState.READY), keeper_alive=True)
        is RunState.RESTARTING
    )


def test_states_of_a_vm_that_does_not_run() -> None:
    assert overall(VMState.STOPPED, False, _agent(AgentState.STOPPED)) is RunState.STOPPED
    assert overall(VMState.ABSENT, False, None) is RunState.STOPPED
    assert overall(None, False, None) is RunState.UNKNOWN


def test_hints_say_what_to_run() -> None:
    assert "`pyd start -n dev` resumes it" in status_hint(
        RunState.PAUSED, _agent(AgentState.READY), " -n dev"
    )
    degraded = status_hint(RunState.DEGRADED, None, "")
    assert "`pyd start` starts it again" in degraded and "pyd logs" in degraded
    # The agent's own hint wins: a crash loop's, the VM's crash.
    gave_up = _agent(
        AgentState.FAILED, "crashed 5 times", "see `pyd logs`; `pyd start` starts it again"
    )
    assert status_hint(RunState.DEGRADED, gave_up, "") == gave_up.hint
    crashed = _agent(AgentState.STOPPED, "the VM stopped unexpectedly")
    assert "pyd start" in status_hint(RunState.STOPPED, crashed, "")
    assert (
        status_hint(RunState.STOPPED, _agent(AgentState.STOPPED), "") == ""
    )  # `pyd stop`: nothing to do
    assert status_hint(RunState.RUNNING, _agent(AgentState.READY), "") == ""


def test_keeper_notes() -> None:
    assert keeper_note(None, False) == ""
    assert keeper_note(KeeperStatus(pid=1), True) == "watching the agent"
    assert keeper_note(KeeperStatus(pid=1), False) == "not running"
    at = time.mktime((2026, 12, 3, 6, 30, 5, 0, 0, -1))
    once = KeeperStatus(pid=1, restarts=1, last_cause="signal 9", last_at=at)
    assert keeper_note(once, True) == "agent restarted after it died (signal 9) at 06:30:05"
    twice = KeeperStatus(pid=1, restarts=2, last_cause="signal 11", last_at=at)
    assert keeper_note(twice, True).endswith("(2 times)")
    gave_up = KeeperStatus(pid=1, gave_up=True, crashes=5, last_cause="exit code 1")
    assert keeper_note(gave_up, False) == (
        "gave up after 5 crashes of the agent (last: exit code 1): see `pyd logs`"
    )


def test_every_agent_state_short_of_ready_is_an_instance_state() -> None:
    assert overall(VMState.RUNNING, True, _agent(AgentState.FAILED)) is RunState.FAILED
    for state in AgentState:
        if state != AgentState.READY:
            assert overall(VMState.RUNNING, True, _agent(state)) == state


def test_states_are_written_as_their_plain_names() -> None:
    # `pyd status --json` and `pyd list` show the value, as when states were strings.
    assert json.dumps({"state": RunState.DEGRADED}) == '{"state": "degraded"}'
    assert f"{RunState.RUNNING}" == "running"
