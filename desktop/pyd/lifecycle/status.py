"""`pyd status` and `pyd list`: one picture of an instance from its VM, agent and files."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pyd.agent.status import READY, AgentStatus, MountStatus, PortStatus
from pyd.backends.base import VMState
from pyd.config.model import context_name
from pyd.config.store import load_config
from pyd.errors import PydError
from pyd.instance_state import load_state
from pyd.lifecycle.agent_proc import agent_running, agent_status
from pyd.lifecycle.backend import backend_for_config
from pyd.lifecycle.instance import Instance


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    state: str  # running | starting | reconnecting | degraded | stopped | unknown | broken
    vm: str
    agent: str  # the agent's state, or "not running"
    agent_pid: int | None
    docker_host: str
    context: str
    ssh_port: int | None
    cpus: int
    memory_mib: int
    disk_gib: int
    backend: str
    accel: str
    image: str
    phases: dict[str, float]
    error: str
    ports: tuple[PortStatus, ...] = ()  # as the running agent reports them
    mounts: tuple[MountStatus, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def overall(vm: str, agent_alive: bool, agent: AgentStatus | None) -> str:
    """Pure: what a user would call the instance's state."""
    if vm != VMState.RUNNING.value:
        return "stopped" if vm in (VMState.STOPPED.value, VMState.ABSENT.value) else "unknown"
    if not agent_alive or agent is None:
        return "degraded"  # the VM runs but nothing carries the Docker socket: `pyd start`
    return "running" if agent.state == READY else agent.state


def instance_status(inst: Instance) -> InstanceStatus:
    cfg = load_config(inst.files.config)
    state = load_state(inst.files.state)
    error = ""
    try:
        vm = backend_for_config(inst.name, cfg).state().value
    except PydError as e:
        vm, error = "unknown", e.message
    alive = agent_running(inst.files)
    agent = agent_status(inst.files)
    return InstanceStatus(
        name=inst.name,
        state=overall(vm, alive, agent),
        vm=vm,
        agent=agent.state if agent and alive else "not running",
        agent_pid=agent.pid if agent and alive else None,
        docker_host=agent.docker_host if agent and alive else "",
        context=context_name(inst.name),
        ssh_port=state.ssh_port if state else None,
        cpus=cfg.cpus,
        memory_mib=cfg.memory_mib,
        disk_gib=cfg.disk_gib,
        backend=cfg.backend,
        accel=state.accel if state else cfg.accel,
        image=state.image_key if state else "",
        phases={p.name: p.seconds for p in agent.phases} if agent else {},
        error=error or (agent.error if agent else ""),
        ports=agent.ports if agent and alive else (),
        mounts=agent.mounts if agent and alive else (),
    )


def broken_status(name: str, error: str) -> InstanceStatus:
    """An instance whose config or state cannot be read: listed, with the reason."""
    return InstanceStatus(
        name=name,
        state="broken",
        vm="unknown",
        agent="unknown",
        agent_pid=None,
        docker_host="",
        context=context_name(name),
        ssh_port=None,
        cpus=0,
        memory_mib=0,
        disk_gib=0,
        backend="",
        accel="",
        image="",
        phases={},
        error=error,
    )
