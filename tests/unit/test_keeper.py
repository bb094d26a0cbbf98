"""The agent's keeper: its restart policy (pure), and the keeper itself running real child
processes that crash, stop on request or end on purpose."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from pyd.agent.keeper import (
    Keeper,
    RestartPolicy,
    death_cause,
    ended_on_purpose,
    gave_up_status,
    read_keeper_status,
    was_ready,
)
from pyd.agent.status_file import AgentState, AgentStatus, read_status
from pyd.host.procs import pid_alive
from pyd.instance.files import InstanceFiles
from tests.unit.polling import until

TOKEN = "t0k3n"


def test_the_first_crash_restarts_at_once_then_backs_off_then_gives_up() -> None:
    policy = RestartPolicy(limit=5, window=60)
    assert [policy.crashed(t) for t in (0.0, 1.0, 2.0, 3.0)] == [0.0, 0.5, 1.0, 2.0]
    assert policy.crashed(4.0) is None  # the fifth within a minute


def test_crashes_outside_the_window_are_forgotten() -> None:
    policy = RestartPolicy(limit=3, window=60)
    assert policy.crashed(0.0) == 0.0
    assert policy.crashed(10.0) == 0.5
    # An agent that then ran for over a minute: a fresh start, not a third strike.
    assert policy.crashed(80.0) == 0.0
    assert policy.crashed(81.0) == 0.5
    assert policy.crashed(82.0) is None


def test_the_backoff_is_capped() -> None:
    policy = RestartPolicy(limit=100, window=1000, base=1, cap=3)
    delays = [policy.crashed(float(t)) for t in range(6)]
    assert delays == [0.0, 1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("code", "platform", "said"),
    [
        (-9, "linux", "signal 9"),
        (-11, "darwin", "signal 11"),
        (1, "linux", "exit code 1"),
        (1, "win32", "exit code 1"),  # TerminateProcess: Windows has no signals
        (3221225477, "win32", "exit code 3221225477"),  # an access violation
    ],
)
def test_death_cause_per_platform(code: int, platform: str, said: str) -> None:
    assert death_cause(code, platform) == said


def _status(state: str, launch: str = TOKEN, updated: float = 100.0) -> AgentStatus:
    return AgentStatus(state, 42, launch=launch, updated=updated)


def test_only_a_fresh_stopped_or_failed_status_of_this_launch_is_on_purpose() -> None:
    assert ended_on_purpose(_status(AgentState.STOPPED), TOKEN, since=99)
    assert ended_on_purpose(_status(AgentState.FAILED), TOKEN, since=99)
    assert not ended_on_purpose(_status(AgentState.READY), TOKEN, since=99)  # killed while serving
    assert not ended_on_purpose(None, TOKEN, since=99)  # died before writing anything
    assert not ended_on_purpose(_status(AgentState.STOPPED, launch="other"), TOKEN, since=99)
    assert not ended_on_purpose(
        _status(AgentState.STOPPED, updated=50), TOKEN, since=99
    )  # earlier agent


def test_only_an_agent_that_served_docker_is_restarted_as_such() -> None:
    assert was_ready(_status(AgentState.READY), TOKEN)
    assert was_ready(_status(AgentState.RECONNECTING), TOKEN)
    assert not was_ready(_status("starting"), TOKEN)  # died while booting
    assert not was_ready(_status(AgentState.READY, launch="other"), TOKEN)
    assert not was_ready(None, TOKEN)


def test_giving_up_leaves_a_failed_status_with_a_hint() -> None:
    last = _status(AgentState.READY)
    gave = gave_up_status(last, TOKEN, crashes=5, window=60)
    assert gave.state == AgentState.FAILED and gave.launch == TOKEN
    assert "crashed 5 times within 60 s" in gave.error
    assert "pyd logs" in gave.hint and "pyd start" in gave.hint
    assert gave_up_status(None, TOKEN, 5, 60).state == AgentState.FAILED


# -- the keeper with real child processes ------------------------------------------------

# A stand-in for the agent: each run counts itself in a file, then does what its turn says:
# "kill" (SIGKILL itself), "exit3" (exit without a word), "stop" (write a stopped status
# and exit 0), "serve" (write ready, wait for the keeper's stop word on stdin, as the agent
# does, or SIGTERM; write stopped).
CHILD = r"""
import json, os, signal, sys, threading, time
root, plan = sys.argv[1], sys.argv[2].split(",")
runs = os.path.join(root, "runs")
n = len(open(runs).read()) if os.path.exists(runs) else 0
open(runs, "a").write("x")
open(os.path.join(root, "envs"), "a").write(os.environ.get("PYD_AGENT_RESTARTED", "-"))
turn = plan[min(n, len(plan) - 1)]
def status(state):
    data = {"state": state, "pid": os.getpid(), "phase": "", "phases": [], "error": "",
            "hint": "", "docker_host": "", "launch": "TOKEN", "updated": time.time()}
    tmp = os.path.join(root, "agent.json.tmp")
    open(tmp, "w").write(json.dumps(data))
    os.replace(tmp, os.path.join(root, "agent.json"))
if turn == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif turn == "exit3":
    sys.exit(3)
elif turn == "stop":
    status("stopped")
else:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    def listen():
        while word := sys.stdin.buffer.read(1):
            if word == b"s":
                stop.set()
    threading.Thread(target=listen, daemon=True).start()
    status("ready")
    while not stop.wait(0.05):
        pass  # serves until asked to stop
    status("stopped")
""".replace("TOKEN", TOKEN)


def _keeper(tmp_path: Path, plan: str, policy: RestartPolicy | None = None) -> Keeper:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    keeper = Keeper(
        InstanceFiles(tmp_path), "unit", TOKEN, [sys.executable, str(script), str(tmp_path), plan]
    )
    if policy is not None:
        keeper.policy = policy
    return keeper


def _ready(tmp_path: Path) -> bool:
    s = read_status(tmp_path / "agent.json")
    return s is not None and s.state == AgentState.READY


def _runs(tmp_path: Path) -> int:
    path = tmp_path / "runs"
    return len(path.read_text()) if path.exists() else 0


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
def test_an_agent_killed_by_a_signal_is_started_again_and_the_cause_kept(tmp_path: Path) -> None:
    keeper = _keeper(tmp_path, "kill,stop")
    assert keeper.run() == 0  # the second run stopped on purpose: the keeper is done
    assert _runs(tmp_path) == 2
    kept = read_keeper_status(tmp_path / "keeper.json")
    assert kept is not None
    assert (kept.restarts, kept.last_cause, kept.gave_up) == (1, "signal 9", False)
    assert kept.last_at > time.time() - 60
    # It died before it was ready: the next one starts as from the start (waits for all).
    assert (tmp_path / "envs").read_text() == "--"


def test_a_crash_loop_gives_up_and_says_so_in_agent_json(tmp_path: Path) -> None:
    keeper = _keeper(tmp_path, "exit3", RestartPolicy(limit=3, window=60, base=0.01))
    assert keeper.run() == 1
    assert _runs(tmp_path) == 3
    kept = read_keeper_status(tmp_path / "keeper.json")
    assert kept is not None
    assert (kept.gave_up, kept.crashes, kept.last_cause) == (True, 3, "exit code 3")
    status = read_status(tmp_path / "agent.json")
    assert status is not None and status.state == AgentState.FAILED and status.launch == TOKEN
    assert "crashed 3 times" in status.error


def test_an_agent_that_stops_on_purpose_is_not_restarted(tmp_path: Path) -> None:
    keeper = _keeper(tmp_path, "stop")
    assert keeper.run() == 0
    assert _runs(tmp_path) == 1
    kept = read_keeper_status(tmp_path / "keeper.json")
    assert kept is not None and kept.restarts == 0


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no SIGTERM to pass on")
def test_a_stop_request_reaches_the_agent_and_ends_the_keeper(tmp_path: Path) -> None:
    keeper = _keeper(tmp_path, "serve")
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(keeper.run()))
    runner.start()

    until(lambda: _ready(tmp_path), 30, what="the child ready")
    keeper.request_stop()  # what the SIGTERM handler does
    runner.join(timeout=30)
    assert result == [0]
    assert _runs(tmp_path) == 1
    final = read_status(tmp_path / "agent.json")
    assert final is not None and final.state == AgentState.STOPPED  # the child saw SIGTERM


def test_keeper_status_survives_a_round_trip(tmp_path: Path) -> None:
    (tmp_path / "keeper.json").write_text(json.dumps({"pid": 3}))  # older or damaged
    assert read_keeper_status(tmp_path / "keeper.json") is None
    assert read_keeper_status(tmp_path / "missing.json") is None


# The standby stand-in: waits for the keeper's word, notes that it went, then is the child.
STANDBY = """
import os, runpy, sys
word = sys.stdin.buffer.read(1)
if word not in (b"r", b"g"):
    sys.exit(0)
if word == b"r":
    os.environ["PYD_AGENT_RESTARTED"] = "1"
script = sys.argv[1]
sys.argv = sys.argv[1:]
open(os.path.join(sys.argv[1], "went"), "a").write("x")
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
def test_a_restart_takes_the_waiting_standby(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = [str(script), str(tmp_path), "serve,stop"]
    keeper = Keeper(
        InstanceFiles(tmp_path),
        "unit",
        TOKEN,
        [sys.executable, *child],
        [sys.executable, "-c", STANDBY, *child],
        standby_after=0.1,
    )
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(keeper.run()))
    runner.start()
    try:
        until(lambda: keeper.standby is not None, 30, what="a standby beside the first agent")
        # The first agent counted its run (else the standby's would be taken for the first).
        until(lambda: _ready(tmp_path), 30, what="the first agent serves")
        first = read_keeper_status(tmp_path / "keeper.json")
        assert first is not None
        os.kill(first.agent_pid, signal.SIGKILL)
        runner.join(timeout=30)
    finally:
        if runner.is_alive():  # a failure above: the keeper and its children must not linger
            keeper.request_stop()
            runner.join(timeout=30)
    assert result == [0]  # the second run, the standby's, stopped on purpose
    assert (tmp_path / "went").read_text() == "x"
    assert _runs(tmp_path) == 2
    # In place of an agent that was ready: told so (it serves Docker without the waits).
    assert (tmp_path / "envs").read_text() == "-1"
    assert keeper.standby is None  # a later standby, if any, was sent away


def test_a_keeper_whose_instance_was_deleted_stops_its_agent_and_ends(tmp_path: Path) -> None:
    """A keeper that `pyd delete` did not find (it had not taken its lock yet) would keep
    an agent running for ever: the directory's end is its stop."""
    root = tmp_path / "instance"
    root.mkdir()
    keeper = _keeper(root, "serve")
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(keeper.run()), daemon=True)
    runner.start()
    until(lambda: _ready(root), 30, what="the child ready")
    pid = read_status(root / "agent.json")
    assert pid is not None
    shutil.rmtree(root)
    runner.join(timeout=30)
    assert result == [0]
    until(lambda: not pid_alive(pid.pid), 10, what="the agent gone")
