from __future__ import annotations

import json
from dataclasses import asdict, replace

from pyd.agent.status_file import AgentState, AgentStatus, parse_status
from pyd.lifecycle.status import overall
from pyd.vm.backends.base import VMState


def test_phases_accumulate_in_order_with_their_durations() -> None:
    s = AgentStatus(AgentState.STARTING, 42).begin("ssh")
    assert s.phase == "ssh"
    s = s.finish(1.23456).begin("engine").finish(2.0)
    assert [(p.name, p.seconds) for p in s.phases] == [("ssh", 1.235), ("engine", 2.0)]
    assert s.phase == ""


def test_status_round_trips_through_json() -> None:
    s = (
        AgentStatus(AgentState.STARTING, 7)
        .begin("ssh")
        .finish(0.5)
        .to(AgentState.FAILED, "boom", "try again")
    )
    back = parse_status(json.dumps(asdict(s)))
    assert back == s


def test_half_written_or_unknown_status_reads_as_none() -> None:
    assert parse_status('{"state": "ready", "pid"') is None
    good = asdict(AgentStatus(AgentState.READY, 1))
    assert parse_status(json.dumps({**good, "state": "dancing"})) is None


def test_overall_state_names_what_a_user_sees() -> None:
    ready = AgentStatus(AgentState.READY, 1)
    assert overall(VMState.RUNNING, True, ready) == "running"
    assert overall(VMState.RUNNING, True, AgentStatus(AgentState.STARTING, 1)) == "starting"
    assert overall(VMState.RUNNING, False, ready) == "degraded"
    assert overall(VMState.STOPPED, False, None) == "stopped"
    assert overall(None, False, None) == "unknown"


def test_the_status_file_holds_the_bare_state() -> None:
    """A StrEnum: agent.json is what it was with plain strings, for every state."""
    for state in AgentState:
        text = json.dumps(asdict(AgentStatus(state, 1)))
        assert f'"state": "{state.value}"' in text
        back = parse_status(text)
        assert back is not None and back.state is state


def test_platforms_round_trip_and_an_older_file_without_them_still_reads() -> None:
    s = replace(AgentStatus(AgentState.READY, 1), platforms=("linux/amd64", "linux/arm64"))
    text = json.dumps(asdict(s))
    assert '"platforms": ["linux/amd64", "linux/arm64"]' in text
    assert parse_status(text) == s
    older = {k: v for k, v in asdict(s).items() if k != "platforms"}
    back = parse_status(json.dumps(older))
    assert back is not None and back.platforms == ()


def test_warnings_round_trip_and_an_older_file_without_them_still_reads() -> None:
    s = replace(AgentStatus(AgentState.READY, 1), warnings=("the exec pipe is taken",))
    back = parse_status(json.dumps(asdict(s)))
    assert back is not None and back.warnings == ("the exec pipe is taken",)
    older = {k: v for k, v in asdict(s).items() if k != "warnings"}
    back = parse_status(json.dumps(older))
    assert back is not None and back.warnings == ()
