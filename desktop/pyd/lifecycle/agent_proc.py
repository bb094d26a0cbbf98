"""The host agent seen from the CLI: launch it detached, follow its status, stop it."""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from pyd.agent.keeper import KeeperStatus, read_keeper_status
from pyd.agent.status_file import AgentState, AgentStatus, read_status, write_status
from pyd.errors import PydError
from pyd.host.detached import detached, launch_detached
from pyd.host.private_files import write_private_text
from pyd.host.process_control import kill_process, read_pid_record, terminate_process
from pyd.host.process_identity import ProcessIdentity, identify
from pyd.instance.files import InstanceFiles
from pyd.instance.saved_state import RestoreMark, read_mark, write_mark
from pyd.lifecycle.progress import Progress

# What makes the VM run (a restore) while the agent starts up: HostAgent.launch's `meanwhile`.
Meanwhile = Callable[[], None] | None
WAIT_READY = 330.0  # the agent's own boot timeout (300 s) plus slack


def agent_running(files: InstanceFiles) -> bool:
    """The agent holds agent.lock while it lives: immune to stale pid files and pid reuse."""
    return _held(files.agent_lock)


def keeper_running(files: InstanceFiles) -> bool:
    """The keeper (agent/keeper.py) holds keeper.lock while it lives."""
    return _held(files.keeper_lock)


def keeper_status(files: InstanceFiles) -> KeeperStatus | None:
    return read_keeper_status(files.keeper_status)


def _held(path: Path) -> bool:
    if not path.exists():
        return False
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


@dataclass(frozen=True)
class Launched:
    proc: subprocess.Popen[bytes]
    token: str  # the agent reports it: on Windows a venv launcher's pid is not the agent's


def launch_agent(files: InstanceFiles, name: str) -> Launched:
    """Starts the keeper, which runs the agent and restarts it when it dies."""
    files.agent_status.unlink(missing_ok=True)
    files.keeper_status.unlink(missing_ok=True)
    files.stop_request.unlink(missing_ok=True)  # one left by a `pyd stop` that was killed
    flags = detached(sys.platform)
    token = secrets.token_hex(8)
    # 0600 from the start: the log names containers, ports and shares.
    with open(os.open(files.agent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        proc = launch_detached(
            [sys.executable, "-m", "pyd.agent.keeper", str(files.root), name, token],
            flags,
            stdout=log,
            stderr=log,
            cwd=files.root,
        )
    return Launched(proc, token)


def launch_around(files: InstanceFiles, name: str, meanwhile: Callable[[], None]) -> Launched:
    """Starts the agent, then runs `meanwhile` (a restore: the VM is not running yet) while
    the agent's interpreter starts and it waits for SSH: the two overlap instead of adding
    up (~0.4 s of a warm start). The agent waits for a VM that is not running only while
    files.restoring says a restore is under way; `meanwhile` says it is over as soon as the
    VM runs (saved_state.write_mark, with what the agent may skip), or it is said here when
    `meanwhile` returns. When `meanwhile` raises, the agent is stopped, the marker removed,
    and the error passes on."""
    write_mark(files.restoring, RestoreMark(done=False))
    try:
        launched = launch_agent(files, name)
        try:
            meanwhile()
        except BaseException:
            # A restore that fails at once may beat the keeper to its lock: stop_agent would
            # see nothing running, and the agent would start later beside the next one.
            _await_keeper(files, launched)
            stop_agent(files)
            raise
    except BaseException:
        files.restoring.unlink(missing_ok=True)
        raise
    mark = read_mark(files.restoring, time.time())
    if mark is None or not mark.done:
        write_mark(files.restoring, RestoreMark(done=True))
    return launched


def _await_keeper(files: InstanceFiles, launched: Launched, timeout: float = 30) -> None:
    """Until the keeper just launched holds its lock (so stop_agent can ask it to stop) or
    has exited; at most `timeout` seconds (a keeper starts in well under a second)."""
    deadline = time.monotonic() + timeout
    while launched.proc.poll() is None and not keeper_running(files):
        if time.monotonic() >= deadline:
            return
        time.sleep(STOP_POLL)


def wait_ready(files: InstanceFiles, agent: Launched, progress: Progress) -> str:
    """Follows the agent's phases until it is ready; returns the Docker host URL."""
    shown = 0
    current = ""
    deadline = time.monotonic() + WAIT_READY
    while time.monotonic() < deadline:
        status = read_status(files.agent_status)
        if status is not None and status.launch == agent.token:
            for p in status.phases[shown:]:
                progress.done(p.name, p.seconds)
            shown = len(status.phases)
            if status.phase and status.phase != current:
                current = status.phase
                progress.begin(current)
            if status.state == AgentState.READY:
                return status.docker_host
            if status.state in (AgentState.FAILED, AgentState.STOPPED):
                raise PydError(status.error or "the host agent stopped", hint=status.hint)
        if agent.proc.poll() is not None and not _agent_alive_elsewhere(files, agent):
            raise PydError(
                f"the host agent exited with {agent.proc.returncode} before the engine answered",
                hint=f"see {files.agent_log}\n{_tail(files)}",
            )
        time.sleep(0.05)
    raise PydError(
        f"the Docker engine did not answer within {WAIT_READY:.0f} s",
        hint="see `pyd logs`; the VM keeps running: `pyd stop` or try `pyd start` again",
    )


def _agent_alive_elsewhere(files: InstanceFiles, agent: Launched) -> bool:
    """A launcher (Windows venv) may exit while the real agent it started runs on."""
    status = read_status(files.agent_status)
    return status is not None and status.launch == agent.token and agent_running(files)


class StopPath(enum.Enum):
    """How `pyd stop` asks the keeper (and an agent without one) to stop."""

    SIGNAL = "signal"  # SIGTERM: POSIX; keepers and agents of any pyd version obey it
    REQUEST = "request"  # stop.request in the 0700 instance directory: Windows, no signals


STOP_PATH_ENV = "PYD_AGENT_STOP"  # "request": the Windows path on POSIX (tests)
STOP_POLL = 0.02  # how often `pyd stop` looks whether keeper and agent are gone


def stop_path(platform: str, env: Mapping[str, str]) -> StopPath:
    """Pure: Windows has no signal to ask with (os.kill there is TerminateProcess, no
    cleanup); POSIX keeps SIGTERM, which a keeper started by an older pyd also obeys,
    unless the environment asks for the request file."""
    if platform == "win32" or env.get(STOP_PATH_ENV) == StopPath.REQUEST.value:
        return StopPath.REQUEST
    return StopPath.SIGNAL


def keeper_identity(files: InstanceFiles) -> ProcessIdentity | None:
    """The running keeper as keeper.json names it (an older keeper's, without a start
    time, by what runs under its pid now); None when no keeper holds keeper.lock."""
    kept = keeper_status(files)
    if kept is None or not keeper_running(files):
        return None
    if kept.started:
        return ProcessIdentity(kept.pid, float(kept.started))
    return identify(kept.pid)


def agent_identity(files: InstanceFiles) -> ProcessIdentity | None:
    """The running agent as agent.pid names it; None when no agent holds agent.lock."""
    if not agent_running(files):
        return None
    return read_pid_record(files.agent_pid)


def stop_agent(files: InstanceFiles, timeout: float = 10, path: StopPath | None = None) -> None:
    """Asks the keeper to stop (it passes the request on to the agent and waits for it), so
    that it does not restart what is being stopped; an agent without a keeper (one killed by
    force, an agent from before keepers) is asked itself. After `timeout` both are killed,
    each only if its recorded pid and start time still name it: never a reused pid."""
    if path is None:
        path = stop_path(sys.platform, os.environ)
    deadline = time.monotonic() + timeout
    if not keeper_running(files) and not agent_running(files):
        return  # nothing ran: agent.json keeps why it ended (a crashed VM, a crash loop)
    if path is StopPath.REQUEST:
        write_private_text(files.stop_request, "stop\n")
    signalled: set[str] = set()
    try:
        while keeper_running(files) or agent_running(files):
            if time.monotonic() >= deadline:
                _kill(files)
                break
            if path is StopPath.SIGNAL:
                _signal_once(files, signalled)
            time.sleep(STOP_POLL)
    finally:
        files.stop_request.unlink(missing_ok=True)
    _mark_stopped(files)


def _signal_once(files: InstanceFiles, signalled: set[str]) -> None:
    """SIGTERM to the keeper, which passes it on; to the agent only when no keeper runs (any
    more). Once each, as soon as its record names it (a keeper may not have written
    keeper.json yet)."""
    if keeper_running(files):
        who, identity = "keeper", keeper_identity(files)
    else:
        who, identity = "agent", agent_identity(files)
    if who not in signalled and identity is not None:
        signalled.add(who)
        terminate_process(identity)


def _kill(files: InstanceFiles) -> None:
    """The keeper first (else it restarts the agent), then the agent; by identity only."""
    for identity in (keeper_identity(files), agent_identity(files)):
        if identity is not None:
            kill_process(identity)
    end = time.monotonic() + 1.0  # the locks go with the processes
    while (keeper_running(files) or agent_running(files)) and time.monotonic() < end:
        time.sleep(STOP_POLL)


def _mark_stopped(files: InstanceFiles) -> None:
    status = read_status(files.agent_status)
    if status is not None and status.state != AgentState.STOPPED:
        with contextlib.suppress(OSError):
            write_status(files.agent_status, status.to(AgentState.STOPPED))


def agent_status(files: InstanceFiles) -> AgentStatus | None:
    return read_status(files.agent_status)


class HostAgent(Protocol):
    """The host agent as `pyd start`, `stop` and `delete` drive it: PROCESS_AGENT is the
    real one; a unit test gives one that runs nothing."""

    def ready_host(self, files: InstanceFiles) -> str | None:
        """The Docker host of a running agent that is ready, None when there is none."""

    def launch(
        self, files: InstanceFiles, name: str, progress: Progress, meanwhile: Meanwhile = None
    ) -> str:
        """Starts the agent and follows it until ready: its Docker host. `meanwhile`: what
        makes the VM run (a restore), done while the agent starts up; when it raises, the
        agent is stopped and the error passes on."""

    def stop(self, files: InstanceFiles, timeout: float = 10) -> None:
        """Stops a running agent (no-op when none runs)."""


class ProcessAgent:
    """The agent as a detached process under its keeper."""

    def ready_host(self, files: InstanceFiles) -> str | None:
        status = agent_status(files)
        if agent_running(files) and status is not None and status.state == AgentState.READY:
            return status.docker_host
        return None

    def launch(
        self, files: InstanceFiles, name: str, progress: Progress, meanwhile: Meanwhile = None
    ) -> str:
        if meanwhile is None:
            files.restoring.unlink(missing_ok=True)  # a killed start's: this VM booted
            return wait_ready(files, launch_agent(files, name), progress)
        try:
            return wait_ready(files, launch_around(files, name, meanwhile), progress)
        finally:
            files.restoring.unlink(missing_ok=True)  # read by the agent, or it failed

    def stop(self, files: InstanceFiles, timeout: float = 10) -> None:
        stop_agent(files, timeout)


PROCESS_AGENT: HostAgent = ProcessAgent()


def _tail(files: InstanceFiles, lines: int = 15) -> str:
    try:
        text = files.agent_log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
