"""`pyd status` and `pyd list`: one picture of an instance from its VM, agent and files."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyd.agent.keeper import KeeperStatus
from pyd.agent.status_file import AgentState, AgentStatus
from pyd.config.arches import host_arch
from pyd.config.settings import context_name
from pyd.config.store import load_config
from pyd.errors import ImageError, PydError
from pyd.host.paths import images_dir
from pyd.image.cache import ImageCache, image_key
from pyd.image.pull import Keys, cached_newest
from pyd.image.trust import trusted_keys
from pyd.instance.disks import disk_size_gib
from pyd.instance.registry import Instance, name_option
from pyd.instance.state import instance_arch, load_state
from pyd.lifecycle.agent_proc import agent_running, agent_status, keeper_running, keeper_status
from pyd.lifecycle.run_state import RunState
from pyd.mounts.state import MountStatus
from pyd.ports.forwards import PortStatus
from pyd.vm.backends.base import VMState
from pyd.vm.backends.choice import (
    BackendChoice,
    BackendUnavailable,
    backend_for_config,
    resolve_backend,
)

UNKNOWN_VM = "unknown"  # InstanceStatus.vm when the backend cannot tell


@dataclass(frozen=True)
class InstanceStatus:
    name: str
    state: RunState
    vm: str  # a VMState's value, or UNKNOWN_VM
    agent: str  # the agent's state, or "not running"
    agent_pid: int | None
    docker_host: str
    context: str
    ssh_port: int | None
    cpus: int
    memory_mib: int
    disk_gib: int
    backend: str  # what runs the VM: libvirt or qemu (auto resolved); "" when broken
    accel: str
    arch: str  # the guest's architecture (x86_64, aarch64); "" when it cannot be read
    image: str
    phases: dict[str, float]
    error: str
    ports: tuple[PortStatus, ...] = ()  # as the running agent reports them
    mounts: tuple[MountStatus, ...] = ()
    hint: str = ""  # what to do about `state` or `error`
    keeper: str = ""  # what the agent's keeper did: restarts, or why it gave up
    data_disk: str = ""  # how full Docker's data disk is, as the running agent last saw it
    platforms: tuple[str, ...] = ()  # e.g. linux/amd64, linux/arm64: native, then emulated
    newer_image: str = ""  # a newer image for its arch, cached or in the cached index
    # Why `backend`: "its daemon answers at qemu:///system", "auto on darwin", "set in
    # config.toml", "recorded when it booted" (vm/backends/choice.py).
    backend_reason: str = ""
    warnings: tuple[str, ...] = ()  # the running agent's: what works, but not as it should

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def vm_exists(self) -> bool:
        """A QEMU process holds the disks (running or paused), whatever the agent does."""
        return any(self.vm == s.value for s in VMState if s.exists)


def overall(
    vm: VMState | None,
    agent_alive: bool,
    agent: AgentStatus | None,
    keeper_alive: bool = False,
    saved: bool = False,
) -> RunState:
    """Pure: what a user would call the instance's state; `vm` None when the backend cannot
    tell; `saved`: a save of the VM (`pyd suspend`) waits for `pyd start`."""
    if vm is VMState.PAUSED:
        return RunState.PAUSED
    if vm is not VMState.RUNNING:
        if vm is None:
            return RunState.UNKNOWN
        return RunState.SUSPENDED if saved else RunState.STOPPED
    if not agent_alive or agent is None:
        return RunState.RESTARTING if keeper_alive else RunState.DEGRADED
    return RunState.RUNNING if agent.state == AgentState.READY else RunState(agent.state)


def status_hint(state: RunState, agent: AgentStatus | None, name_opt: str) -> str:
    """Pure: what to do, for the states that need the user."""
    if state is RunState.PAUSED:
        return f"the VM is paused; `pyd start{name_opt}` resumes it"
    if state is RunState.SUSPENDED:
        return f"its memory is saved; `pyd start{name_opt}` resumes it where it was"
    if agent is not None and agent.hint:
        return agent.hint
    if state is RunState.DEGRADED:
        return (
            f"the host agent is not running; `pyd start{name_opt}` starts it again "
            f"(`pyd logs{name_opt}` shows why it ended)"
        )
    if state is RunState.STOPPED and agent is not None and agent.error:
        return f"`pyd start{name_opt}` starts it again"
    return ""


def keeper_note(keeper: KeeperStatus | None, alive: bool) -> str:
    """Pure: the keeper's doings in a line: restarts and their cause, or giving up."""
    if keeper is None:
        return ""
    if keeper.gave_up:
        return (
            f"gave up after {keeper.crashes} crashes of the agent (last: {keeper.last_cause}): "
            "see `pyd logs`"
        )
    if keeper.restarts:
        at = time.strftime("%H:%M:%S", time.localtime(keeper.last_at))
        times = f" ({keeper.restarts} times)" if keeper.restarts > 1 else ""
        return f"agent restarted after it died ({keeper.last_cause}) at {at}{times}"
    return "watching the agent" if alive else "not running"


def instance_status(inst: Instance) -> InstanceStatus:
    cfg = load_config(inst.files.config)
    state = load_state(inst.files.state)
    error = vm_hint = ""
    vm: VMState | None
    choice: BackendChoice | None = None
    try:
        choice = resolve_backend(inst.name, cfg)
        vm = backend_for_config(inst.name, cfg).state()
    except BackendUnavailable as e:  # auto keeps it on libvirt, and libvirtd does not answer
        choice, vm, error, vm_hint = e.choice, None, e.message, e.hint
    except PydError as e:
        vm, error, vm_hint = None, e.message, e.hint
    alive = agent_running(inst.files)
    agent = agent_status(inst.files)
    keeper_alive = keeper_running(inst.files)
    state_now = overall(vm, alive, agent, keeper_alive, inst.files.suspend_save.exists())
    return InstanceStatus(
        name=inst.name,
        state=state_now,
        vm=vm.value if vm is not None else UNKNOWN_VM,
        agent=agent.state if agent and alive else "not running",
        agent_pid=agent.pid if agent and alive else None,
        docker_host=agent.docker_host if agent and alive else "",
        context=context_name(inst.name),
        ssh_port=state.ssh_port if state else None,
        cpus=cfg.cpus,
        memory_mib=cfg.memory_mib,
        disk_gib=disk_size_gib(inst.files.data_disk) or cfg.disk_gib,  # the disk's own size
        backend=choice.name if choice else cfg.backend,
        accel=state.accel if state else cfg.accel,
        arch=instance_arch(inst.files) or host_arch(),  # never started: the host's, by default
        image=state.image_key if state else "",
        phases={p.name: p.seconds for p in agent.phases} if agent else {},
        error=error or (agent.error if agent else ""),
        ports=agent.ports if agent and alive else (),
        mounts=agent.mounts if agent and alive else (),
        hint=vm_hint if error else status_hint(state_now, agent, name_option(inst.name)),
        keeper=keeper_note(keeper_status(inst.files), keeper_alive),
        data_disk=agent.data_disk if agent and alive else "",
        platforms=agent.platforms if agent and alive else (),
        newer_image=_newer(cfg.image_keys, state.image_key, state.arch) if state else "",
        backend_reason=choice.reason if choice else "",
        warnings=agent.warnings if agent and alive else (),
    )


def _newer(image_keys: Sequence[str], current: str, arch: str) -> str:
    try:
        keys = trusted_keys(image_keys, os.environ)
    except PydError:
        keys = None  # a bad key file is told by the command that needs it, not here
    return newer_image(ImageCache(images_dir()), current, arch, keys)


def newer_image(cache: ImageCache, current: str, arch: str, keys: Keys | None = None) -> str:
    """The key of the newest image for `arch` when it is newer than `current` (by date),
    from the cache or the index last pulled; else "". Cheap, for every `pyd status`:
    manifests are read and file sizes checked, nothing is hashed and no network is used."""
    found: list[tuple[dt.datetime, str]] = []
    cached = cache.find(arch)  # damaged entries are skipped, never raised
    if cached is not None:
        found.append((_when(cached.manifest.created), cached.key))
    entry = cached_newest(cache, arch, keys)  # its signature checked again; None if it fails
    if entry is not None:
        found.append((entry.when, image_key(arch, entry.recipe_hash)))
    if not found:
        return ""
    when, key = max(found)
    try:
        ours = cache.get(current)
    except ImageError:
        ours = None
    # An instance whose image left the cache: any other one is the way forward.
    if key == current or (ours is not None and when <= _when(ours.manifest.created)):
        return ""
    return key


def _when(created: str) -> dt.datetime:
    """A manifest's date; one that cannot be read counts as the oldest."""
    try:
        when = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def broken_status(name: str, error: str) -> InstanceStatus:
    """An instance whose config or state cannot be read: listed, with the reason."""
    return InstanceStatus(
        name=name,
        state=RunState.BROKEN,
        vm=UNKNOWN_VM,
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
        arch="",
        image="",
        phases={},
        error=error,
    )
