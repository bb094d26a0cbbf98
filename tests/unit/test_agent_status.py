from __future__ import annotations

import json
from dataclasses import asdict

from pyd.agent.status_file import FAILED, READY, STARTING, AgentStatus, parse_status
from pyd.lifecycle.status import overall


def test_phases_accumulate_in_order_with_their_durations() -> None:
    s = AgentStatus(STARTING, 42).begin("ssh")
    assert s.phase == "ssh"
    s = s.finish(1.23456).begin("engine").finish(2.0)
    assert [(p.name, p.seconds) for p in s.phases] == [("ssh", 1.235), ("engine", 2.0)]
    assert s.phase == ""


def test_status_round_trips_through_json() -> None:
    s = AgentStatus(STARTING, 7).begin("ssh").finish(0.5).to(FAILED, "boom", "try again")
    back = parse_status(json.dumps(asdict(s)))
    assert back == s


def test_half_written_or_unknown_status_reads_as_none() -> None:
    assert parse_status('{"state": "ready", "pid"') is None
    good = asdict(AgentStatus(READY, 1))
    assert parse_status(json.dumps({**good, "state": "dancing"})) is None


def test_overall_state_names_what_a_user_sees() -> None:
    ready = AgentStatus(READY, 1)
    assert overall("running", True, ready) == "running"
    assert overall("running", True, AgentStatus(STARTING, 1)) == "starting"
    assert overall("running", False, ready) == "degraded"
    assert overall("stopped", False, None) == "stopped"
    assert overall("unknown", False, None) == "unknown"
