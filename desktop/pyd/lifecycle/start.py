"""`pyd start`: config → image → disks + seed → VM → host agent → Docker context."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pyd.config.arches import Arch, get_arch, host_arch
from pyd.config.machine import machine_settings
from pyd.config.settings import InstanceConfig, context_name, with_value
from pyd.config.store import load_config, save_config
from pyd.dockercli.context import ensure_context
from pyd.errors import ImageError, PydError, UsageError
from pyd.host.env import host_timezone, proxy_settings
from pyd.host.loopback import free_loopback_port
from pyd.host.memory import check_memory, host_memory_mib
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.obtain import obtain_for_config
from pyd.instance.disks import record_image_use
from pyd.instance.provision import SeedSettings, ensure_disks, instance_keys, write_seed
from pyd.instance.registry import Instance, instance, name_option
from pyd.instance.state import InstanceState, instance_arch, load_state, save_arch, save_state
from pyd.lifecycle.agent_proc import PROCESS_AGENT, HostAgent
from pyd.lifecycle.keys import renew_keys
from pyd.lifecycle.locking import locked
from pyd.lifecycle.progress import Progress, phase
from pyd.lifecycle.suspend import resume_saved, suspended
from pyd.lifecycle.upgrade_marker import finish_cut_upgrade
from pyd.vm.accel import resolve_accel
from pyd.vm.backends.base import VMBackend, VMState
from pyd.vm.backends.choice import backend_for_config, backend_kind
from pyd.vm.spec import check_memory_limit, guest_spec

PORT_TRIES = 3  # SSH forward ports taken between their choice and QEMU's listen
# After a resume, how long `pyd start` lets the running agent find its link again before it
# starts a new one (a link that heals is back within ~2 s, over a paused TCP connection).
RESUME_WAIT = 15.0


@dataclass(frozen=True)
class StartResult:
    name: str
    docker_host: str
    context: str | None  # None with --no-context
    already_running: bool


def start(
    name: str,
    overrides: Mapping[str, str],
    use_context: bool,
    progress: Progress,
    new_keys: bool = False,
    agent: HostAgent = PROCESS_AGENT,
    arch: str | None = None,
    insecure: bool = False,
    restart: bool = False,
) -> StartResult:
    """`arch`: the guest architecture asked for (`--arch`), None for the instance's own, or
    the host's for a new instance. `insecure`: a new instance's image may come from an
    unsigned index (`--insecure`, said loudly). `restart`: a suspended instance whose
    settings changed is resumed, shut down cleanly and booted with the new ones."""
    inst = instance(name)
    with locked(inst, progress):
        guest = _guest_arch(inst, arch)
        cfg = _settle_config(inst, overrides)
        _keep_arch(inst, guest)
        backend = backend_for_config(inst.name, cfg)
        finish_cut_upgrade(inst.files, backend, agent, progress)  # `pyd upgrade` was killed
        vm = backend.state()
        if not vm.exists and suspended(inst.files):
            agent.stop(inst.files)  # a stale agent from before the suspend
            resumed = resume_saved(
                inst.files,
                inst.name,
                cfg,
                backend,
                progress,
                restart=restart,
                port_free=_port_free,
                also_changed=("new SSH keys (--new-keys)",) if new_keys else (),
                agent=agent,
            )
            if resumed is not None:
                return _finish(inst, resumed, use_context, already=False)
            vm = backend.state()
        if new_keys:  # after a lost key: the VM boots again on a seed with new ones
            vm = renew_keys(inst.files, backend, vm, progress, agent)
        instance_keys(inst.files)  # a lost one is said now, not after the agent's timeout
        if vm is VMState.PAUSED:
            # Then as for a running VM: the agent's link heals by itself once it runs.
            with phase(progress, "resume"):
                backend.resume()
            ready = _ready_agent(agent, inst, RESUME_WAIT)
            if ready is not None:
                return _finish(inst, ready, use_context, already=False)
        elif vm is VMState.RUNNING:
            ready = _ready_agent(agent, inst, 0)
            if ready is not None:
                return _finish(inst, ready, use_context, already=True)
        agent.stop(inst.files)  # a stale agent from before the VM stopped
        if not vm.exists:
            _boot(inst, cfg, backend, progress, guest, insecure)
        docker_host = agent.launch(inst.files, inst.name, progress)
        return _finish(inst, docker_host, use_context, already=False)


def _ready_agent(agent: HostAgent, inst: Instance, wait: float) -> str | None:
    """The Docker host of a running agent that is (or within `wait` seconds becomes) ready;
    None when there is none: `pyd start` then starts one."""
    deadline = time.monotonic() + wait
    while True:
        ready = agent.ready_host(inst.files)
        if ready is not None:
            return ready
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def _settle_config(inst: Instance, overrides: Mapping[str, str]) -> InstanceConfig:
    """The first start stores the given settings; later starts apply cpus/memory/accel
    changes, but the data disk's size is fixed once it exists."""
    cfg = load_config(inst.files.config)
    new = cfg
    for key, raw in overrides.items():
        new = with_value(new, key, raw)
    check_memory(new.memory_mib, host_memory_mib())  # before anything is written
    if inst.files.data_disk.exists() and new.disk_gib != cfg.disk_gib:
        raise UsageError(
            f"the data disk of {inst.name!r} already exists with {cfg.disk_gib} GiB",
            hint="its size is fixed at creation; `pyd delete` and start again for another size",
        )
    if new != cfg or not inst.files.config.exists():
        inst.files.root.mkdir(parents=True, exist_ok=True)
        save_config(inst.files.config, new)
    return new


def _guest_arch(inst: Instance, asked: str | None) -> Arch:
    """The instance's architecture, chosen at its first start and fixed from then on (its OS
    disk is an image of it). Checked before anything is written or started, and kept before
    the boot (_keep_arch): a first start that fails before it (no image yet, too much memory
    for the accelerator) must not make the next `pyd start` without --arch the host's arch."""
    files = inst.files
    state = load_state(files.state)
    wanted = get_arch(asked) if asked is not None else None  # an unknown name is refused here
    chosen = state.arch if state is not None else instance_arch(files)
    # Until its OS disk exists an instance may still change its mind.
    fixed = state is not None or files.os_disk.exists()
    if wanted is not None and chosen is not None and wanted.name != chosen and fixed:
        opt = name_option(inst.name)
        raise UsageError(
            f"instance {inst.name!r} is an {chosen} guest; it cannot start as {wanted.name}",
            hint=f"start it without --arch (`pyd start{opt}`), or give the {wanted.name} guest "
            f"another instance: `pyd start --name NAME --arch {wanted.name}`",
        )
    return wanted or get_arch(chosen)  # the host's when never chosen


def _keep_arch(inst: Instance, arch: Arch) -> None:
    """Until state.json has it: kept once the instance exists (its config is written), so
    a bad setting still leaves nothing behind."""
    if not inst.files.state.exists() and instance_arch(inst.files) != arch.name:
        save_arch(inst.files, arch.name)


def _boot(
    inst: Instance,
    cfg: InstanceConfig,
    backend: VMBackend,
    progress: Progress,
    arch: Arch,
    insecure: bool = False,
) -> None:
    files = inst.files
    state = load_state(files.state)
    choice = resolve_accel(cfg.accel, arch.name)
    if choice.warning:  # e.g. hvf/whpx unavailable: software emulation, and how to fix it
        progress.info(choice.warning + (f"; to fix: {choice.fix}" if choice.fix else ""))
    accel = choice.accel
    machine = machine_settings(accel, arch.name)
    check_memory_limit(arch, machine, cfg.memory_mib)  # before an image, disk or seed is made
    with phase(progress, "image"):
        image = _image(state, arch, progress, cfg, insecure)
        # At once, before the disks: from here on prune (of any PYD_HOME) keeps the image.
        # An instance made before use records existed gets one at its next boot.
        record_image_use(image.file("rootfs.qcow2"), files.os_disk)
    with phase(progress, "disks"):
        ensure_disks(files, image, cfg.disk_gib)
        hostname = context_name(inst.name)
        write_seed(
            files,
            SeedSettings(
                instance_id=inst.name,
                hostname=hostname,
                proxy=proxy_settings(os.environ),
                timezone=host_timezone(),
                host_access=cfg.host_access,
            ),
        )
        port = state.ssh_port if state and _port_free(state.ssh_port) else free_loopback_port()
        files.docker_sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The backend too: `backend = "auto"` keeps to it (vm/backends/choice.py).
    kind = backend_kind(backend)
    with phase(progress, "vm"):
        for attempt in range(1, PORT_TRIES + 1):
            save_state(files.state, InstanceState(port, image.key, accel, arch.name, kind))
            spec = guest_spec(
                arch,
                machine,
                image,
                files,
                cpus=cfg.cpus,
                memory_mib=cfg.memory_mib,
                ssh_port=port,
            )
            try:
                backend.start(spec)
                return
            except PydError:
                # The port was free when chosen, but another program (or another instance's
                # start) took it before QEMU listened: QEMU cannot forward SSH from it.
                if attempt == PORT_TRIES or _port_free(port) or backend.state().exists:
                    raise
            progress.info(f"port {port} was taken as the VM started; trying another one")
            port = free_loopback_port()


def _image(
    state: InstanceState | None,
    arch: Arch,
    progress: Progress,
    cfg: InstanceConfig,
    insecure: bool,
) -> CachedImage:
    """An existing instance's own image; a new one's the newest, built or downloaded."""
    cache = ImageCache(images_dir())
    if state is not None:
        # The OS disk is an overlay on this exact image; another one would not boot it.
        found = cache.get(state.image_key)
        if found is None:
            raise ImageError(
                f"the image this instance was created from ({state.image_key}) is no longer "
                f"in the cache ({cache.root})",
                hint=f"`pyd image build{_arch_option(arch)}` rebuilds it when the recipe is "
                "unchanged, or `pyd image fetch` it again",
            )
        return found
    return obtain_for_config(cache, arch, cfg, progress.info, insecure=insecure, build=build_image)


def _arch_option(arch: Arch) -> str:
    """What a suggested command line says to name `arch`: nothing for the host's own."""
    return "" if arch.name == host_arch() else f" --arch {arch.name}"


def _port_free(port: int) -> bool:
    """Free for QEMU's listener, which sets SO_REUSEADDR: connections of the last run
    still in TIME_WAIT do not take the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _finish(inst: Instance, docker_host: str, use_context: bool, already: bool) -> StartResult:
    context = None
    if use_context:
        context = context_name(inst.name)
        ensure_context(context, docker_host, f"pyd instance {inst.name}", make_current=True)
    return StartResult(inst.name, docker_host, context, already)
