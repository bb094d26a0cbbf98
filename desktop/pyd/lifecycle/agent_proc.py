"""The host agent seen from the CLI: launch it detached, follow its status, stop it."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from filelock import FileLock, Timeout

from pyd.agent.keeper import KeeperStatus, read_keeper_status
from pyd.agent.status_file import AgentState, AgentStatus, read_status, write_status
from pyd.errors import PydError
from pyd.host.procs import terminate
from pyd.instance.files import InstanceFiles
from pyd.lifecycle.progress import Progress

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
    flags = 0
    if sys.platform == "win32":
        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined,unused-ignore]
    token = secrets.token_hex(8)
    # 0600 from the start: the log names containers, ports and shares.
    with open(os.open(files.agent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyd.agent.keeper", str(files.root), name, token],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=files.root,
            close_fds=True,
            start_new_session=sys.platform != "win32",
            creationflags=flags,
        )
    return Launched(proc, token)


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


def stop_agent(files: InstanceFiles, timeout: float = 10) -> None:
    """The keeper first (POSIX: it passes SIGTERM on to the agent and waits for it), so that
    it does not restart what is being stopped; then the agent, if it still runs (Windows has
    no signals to pass on; a keeper killed by force; an agent from before keepers)."""
    deadline = time.monotonic() + timeout
    keeper = keeper_status(files)
    stopped_keeper = keeper is not None and keeper_running(files)
    if keeper is not None and stopped_keeper:
        terminate(keeper.pid, timeout)
    if not agent_running(files):
        if stopped_keeper:
            _mark_stopped(files)
        return  # nothing ran: agent.json keeps why it ended (a crashed VM, a crash loop)
    try:
        pid = int(files.agent_pid.read_text().strip())
    except (OSError, ValueError):
        return
    terminate(pid, max(deadline - time.monotonic(), 1.0))
    _mark_stopped(files)


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

    def launch(self, files: InstanceFiles, name: str, progress: Progress) -> str:
        """Starts the agent and follows it until ready: its Docker host."""

    def stop(self, files: InstanceFiles, timeout: float = 10) -> None:
        """Stops a running agent (no-op when none runs)."""


class ProcessAgent:
    """The agent as a detached process under its keeper."""

    def ready_host(self, files: InstanceFiles) -> str | None:
        status = agent_status(files)
        if agent_running(files) and status is not None and status.state == AgentState.READY:
            return status.docker_host
        return None

    def launch(self, files: InstanceFiles, name: str, progress: Progress) -> str:
        return wait_ready(files, launch_agent(files, name), progress)

    def stop(self, files: InstanceFiles, timeout: float = 10) -> None:
        stop_agent(files, timeout)


PROCESS_AGENT: HostAgent = ProcessAgent()


def _tail(files: InstanceFiles, lines: int = 15) -> str:
    try:
        text = files.agent_log.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
