"""The agent's status file: written by the agent at each change, read by `pyd start`
(to show progress and wait for "ready") and `pyd status`. Pure model plus atomic IO."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pyd.host.atomicfile import write_atomic
from pyd.mounts.state import MountStatus
from pyd.ports.forwards import PortStatus


class AgentState(enum.StrEnum):
    """The agent's state in agent.json (a StrEnum: the file holds the bare value)."""

    STARTING = "starting"  # connecting, waiting for the engine
    READY = "ready"  # the engine answers through the host socket
    RECONNECTING = "reconnecting"  # SSH down (error says why: the link, a paused VM); being re-made
    FAILED = "failed"  # gave up, or the VM died under a ready agent; `error` and `hint` say why
    STOPPED = "stopped"  # exited on request or because the VM is gone


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float


@dataclass(frozen=True)
class AgentStatus:
    state: AgentState
    pid: int
    phase: str = ""  # the phase in progress
    phases: tuple[Phase, ...] = ()  # finished ones, in order
    error: str = ""
    hint: str = ""
    docker_host: str = ""
    launch: str = ""  # the token `pyd start` gave this agent (pids differ behind launchers)
    ports: tuple[PortStatus, ...] = ()
    mounts: tuple[MountStatus, ...] = ()
    updated: float = field(default_factory=time.time)
    # What the agent last saw of the VM once ready ("running", "paused", "stopped", "absent";
    # "" before, or while it cannot tell) and since when (time.time()) the SSH link has been
    # down, 0 while it is up. Fields are only ever added: older readers ignore them.
    vm: str = ""
    link_down_since: float = 0.0
    data_disk: str = ""  # how full Docker's data disk is (agent/disk_usage.py); "" not yet known
    platforms: tuple[str, ...] = ()  # what the engine runs, native first (guestdocker/platforms.py)
    warnings: tuple[str, ...] = ()  # what works, but not as it should (the state stays ready)

    def begin(self, phase: str) -> AgentStatus:
        return replace(self, phase=phase, updated=time.time())

    def finish(self, seconds: float) -> AgentStatus:
        done = (*self.phases, Phase(self.phase, round(seconds, 3)))
        return replace(self, phase="", phases=done, updated=time.time())

    def to(self, state: AgentState, error: str = "", hint: str = "") -> AgentStatus:
        phase = self.phase if state is AgentState.STARTING else ""
        return replace(self, state=state, phase=phase, error=error, hint=hint, updated=time.time())


def parse_status(text: str) -> AgentStatus | None:
    """None for a file that is being replaced or damaged (the caller reads again), or that
    names a state this version does not know."""
    try:
        data = json.loads(text)
        phases = tuple(Phase(str(p["name"]), float(p["seconds"])) for p in data["phases"])
        status = AgentStatus(
            state=AgentState(data["state"]),
            pid=int(data["pid"]),
            phase=str(data["phase"]),
            phases=phases,
            error=str(data["error"]),
            hint=str(data["hint"]),
            docker_host=str(data["docker_host"]),
            launch=str(data.get("launch", "")),
            ports=tuple(PortStatus(**p) for p in data.get("ports", ())),
            mounts=tuple(MountStatus(**m) for m in data.get("mounts", ())),
            updated=float(data["updated"]),
            vm=str(data.get("vm", "")),
            link_down_since=float(data.get("link_down_since", 0.0)),
            data_disk=str(data.get("data_disk", "")),
            platforms=tuple(str(p) for p in data.get("platforms", ())),
            warnings=tuple(str(w) for w in data.get("warnings", ())),
        )
    except (ValueError, KeyError, TypeError):
        return None
    return status


def read_status(path: Path) -> AgentStatus | None:
    try:
        return parse_status(path.read_text())
    except OSError:
        return None


def write_status(path: Path, status: AgentStatus) -> None:
    write_atomic(path, json.dumps(asdict(status), indent=2) + "\n")
