"""`pyd upgrade`: an instance moved to the newest image for its arch. Only the OS disk
(an overlay on the image) is replaced; the data disk, where Docker keeps images, containers
and volumes, is never touched. A failed boot or engine check puts the old OS disk and state
back; the steps and what a cut leaves are in upgrade_marker."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from pyd.config.arches import Arch, get_arch
from pyd.config.settings import InstanceConfig
from pyd.config.store import load_config
from pyd.errors import ImageError, PydError, UsageError
from pyd.host.paths import images_dir
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.obtain import cached_instead, obtain_for_config
from pyd.instance.disks import create_overlay
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import Instance, existing, name_option
from pyd.instance.state import load_state, save_state
from pyd.lifecycle.agent_proc import PROCESS_AGENT, HostAgent
from pyd.lifecycle.guest_power import SSH_GUEST, GuestPower
from pyd.lifecycle.locking import locked
from pyd.lifecycle.progress import Progress, phase
from pyd.lifecycle.start import _boot
from pyd.lifecycle.stop import SHUTDOWN_TIMEOUT, power_off
from pyd.lifecycle.upgrade_marker import (
    UpgradeMarker,
    commit_marker,
    finish_cut_upgrade,
    kept_disk,
    put_back,
    write_marker,
)
from pyd.vm.backends.base import VMBackend
from pyd.vm.backends.choice import backend_for_config

# (cache, arch, config, insecure, progress) -> the newest image for arch, in the cache.
NewestImage = Callable[[ImageCache, Arch, InstanceConfig, bool, Progress], CachedImage]


class UpgradeRolledBack(PydError):
    """The shutdown, the OS disk swap, the new image's boot or its engine check failed; the
    old image is back."""


@dataclass(frozen=True)
class UpgradeResult:
    name: str
    old_image: str
    new_image: str  # == old_image when it already was the newest
    running: bool  # the VM runs now (it ran before, or it was started for the check only)
    rolled_back_cut: bool = False  # an earlier upgrade cut short was rolled back first

    @property
    def changed(self) -> bool:
        return self.new_image != self.old_image


def newest_image(
    cache: ImageCache, arch: Arch, cfg: InstanceConfig, insecure: bool, progress: Progress
) -> CachedImage:
    """What a new instance would get (built where this host can, else downloaded from the
    signed index), unless the cache holds a newer one (pulled or imported before). When
    neither way works (no index, an index refused) the newest cached image is taken, and
    the reason said."""
    try:
        obtained = obtain_for_config(cache, arch, cfg, progress.info, insecure=insecure)
    except ImageError as e:  # any failure (start: an unreachable index only): it has an image
        return cached_instead(cache, arch, e, progress.info)
    cached = cache.find(arch.name)
    if cached is not None and cached.manifest.created > obtained.manifest.created:
        return cached
    return obtained


def upgrade(
    name: str,
    progress: Progress,
    *,
    insecure: bool = False,
    agent: HostAgent = PROCESS_AGENT,
    guest: GuestPower = SSH_GUEST,
    newest: NewestImage = newest_image,
    timeout: float = SHUTDOWN_TIMEOUT,
) -> UpgradeResult:
    inst = existing(name)
    files = inst.files
    with locked(inst, progress):
        cfg = load_config(files.config)
        backend = backend_for_config(inst.name, cfg)
        cut = finish_cut_upgrade(files, backend, agent, progress)
        state = load_state(files.state)
        if state is None or not files.os_disk.exists():
            raise UsageError(
                f"instance {inst.name!r} has not been started yet: there is nothing to upgrade",
                hint=f"`pyd start{name_option(inst.name)}` makes it on the newest image",
            )
        arch = get_arch(state.arch)
        run = _Run(inst, cfg, backend, agent, progress, arch)
        with phase(progress, "newest image"):
            target = newest(ImageCache(images_dir()), arch, cfg, insecure, progress)
        vm = backend.state()
        # After a rollback of a cut upgrade the VM was stopped by it, not by the user.
        was_running = vm.exists or (cut is not None and cut.was_running)
        if target.key == state.image_key:
            if cut is not None and cut.was_running:
                _start_vm(run)
            return UpgradeResult(inst.name, state.image_key, target.key, was_running, bool(cut))
        progress.info(f"upgrading {inst.name!r}: {state.image_key} → {target.key}")
        marker = UpgradeMarker(state, target.key, was_running)
        # First, before the shutdown: it names the new image, which prune (reading every
        # *.json of the instance) keeps from now on, and from here on a cut is rolled back.
        write_marker(files, marker)
        stage = "the shutdown"
        try:
            if vm.exists:
                with phase(progress, "shutdown"):
                    agent.stop(files)
                    power_off(files, backend, vm, timeout, guest)
            stage = "the new image"
            with phase(progress, "os-disk swap"):
                os.replace(files.os_disk, kept_disk(files))
                create_overlay(target.file("rootfs.qcow2"), files.os_disk)
                _save_image_key(files, target.key)
            _start_vm(run)
        except PydError as e:
            _roll_back(run, marker, e, stage)
        except OSError as e:  # the rename, a disk or state.json not written
            _roll_back(run, marker, PydError(f"{e.strerror or e}: {e.filename}"), stage)
        with phase(progress, "old OS disk removed"):
            commit_marker(files, marker)
        if not was_running:
            progress.info("it was stopped before the upgrade: stopping it again")
            with phase(progress, "shutdown"):
                agent.stop(files)
                power_off(files, backend, backend.state(), timeout, guest)
        return UpgradeResult(inst.name, state.image_key, target.key, was_running, bool(cut))


def _save_image_key(files: InstanceFiles, key: str) -> None:
    state = load_state(files.state)
    assert state is not None  # read under the same lock just before
    save_state(files.state, replace(state, image_key=key))


@dataclass(frozen=True)
class _Run:
    """What starting the instance's VM again takes, read once under its lock."""

    inst: Instance
    cfg: InstanceConfig
    backend: VMBackend
    agent: HostAgent
    progress: Progress
    arch: Arch


def _start_vm(run: _Run) -> str:
    """Boots the VM (stopped) on the image state.json names, then waits for the agent: it is
    ready once Docker's engine answers through it (`docker version`)."""
    run.agent.stop(run.inst.files)
    _boot(run.inst, run.cfg, run.backend, run.progress, run.arch)
    return run.agent.launch(run.inst.files, run.inst.name, run.progress)


def _roll_back(run: _Run, marker: UpgradeMarker, why: PydError, stage: str) -> None:
    """The old OS disk and state back, and the VM running again on them if it ran before.
    Always raises: UpgradeRolledBack saying why `stage` (the shutdown, the new image)
    failed."""
    inst, backend, agent, progress = run.inst, run.backend, run.agent, run.progress
    old, new = marker.old_state.image_key, marker.new_image
    progress.info(f"{stage} failed ({why.message}); rolling back to {old}")
    with phase(progress, "rollback"):
        agent.stop(inst.files)
        if backend.state().exists:
            backend.kill()  # a guest that did not boot may not answer a clean poweroff
        put_back(inst.files, marker)
    opt = name_option(inst.name)
    if marker.was_running:
        try:
            _start_vm(run)
        except PydError as again:
            raise UpgradeRolledBack(
                f"the upgrade of {inst.name!r} to {new} failed ({why.message}) and was rolled "
                f"back to {old}, but that did not start again either: {again.message}",
                hint=again.hint or f"`pyd logs{opt}` and serial.log in the instance directory",
            ) from why
        now = "running again on it"
    else:
        now = "stopped, as before"
    raise UpgradeRolledBack(
        f"the upgrade of {inst.name!r} to {new} failed and was rolled back to {old} ({now}): "
        f"{why.message}",
        hint=why.hint or f"the instance's data is untouched; `pyd logs{opt}` shows the agent's log",
    ) from why
