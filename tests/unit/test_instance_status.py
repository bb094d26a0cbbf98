"""What `pyd status` calls an instance's state, the hint it gives, and what it says about
the agent's keeper: pure functions of the VM's, agent's and keeper's reports."""

from __future__ import annotations

import time

from pyd.agent.keeper import KeeperStatus
from pyd.agent.status_file import FAILED, READY, RECONNECTING, STOPPED, AgentStatus
from pyd.lifecycle.status import keeper_note, overall, status_hint


def _agent(state: str, error: str = "", hint: str = "") -> AgentStatus:
    return AgentStatus(state, 7).to(state, error, hint)


def test_a_paused_vm_is_paused_whatever_the_agent_says() -> None:
    assert overall("paused", True, _agent(READY)) == "paused"
    assert overall("paused", False, None) == "paused"


def test_states_of_a_running_vm() -> None:
    assert overall("running", True, _agent(READY)) == "running"
    assert overall("running", True, _agent(RECONNECTING)) == "reconnecting"
    assert overall("running", False, _agent(READY)) == "degraded"
    # Between a crash and the restart, the keeper lives on: not the user's to fix.
    assert overall("running", False, _agent(READY), keeper_alive=True) == "restarting"


def test_states_of_a_vm_that_does_not_run() -> None:
    assert overall("stopped", False, _agent(STOPPED)) == "stopped"
    assert overall("absent", False, None) == "stopped"
    assert overall("unknown", False, None) == "unknown"


def test_hints_say_what_to_run() -> None:
    assert "`pyd start -n dev` resumes it" in status_hint("paused", _agent(READY), " -n dev")
    degraded = status_hint("degraded", None, "")
    assert "`pyd start` starts it again" in degraded and "pyd logs" in degraded
    # The agent's own hint wins: a crash loop's, the VM's crash.
    gave_up = _agent(FAILED, "crashed 5 times", "see `pyd logs`; `pyd start` starts it again")
    assert status_hint("degraded", gave_up, "") == gave_up.hint
    crashed = _agent(STOPPED, "the VM stopped unexpectedly")
    assert "pyd start" in status_hint("stopped", crashed, "")
    assert status_hint("stopped", _agent(STOPPED), "") == ""  # `pyd stop`: nothing to do
    assert status_hint("running", _agent(READY), "") == ""


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
