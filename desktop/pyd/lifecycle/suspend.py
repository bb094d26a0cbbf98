"""`pyd suspend`, and what `pyd start` does with a suspended instance (pyd issue 18).

The save (suspend.save) holds the guest's memory: Docker's containers and whatever the guest
has not yet written to its disks. It is therefore never dropped: a start that would boot
other settings refuses until asked (`pyd start --restart`: resume as saved, power off
cleanly, boot anew), and a save that cannot be restored, or whose disks another boot has
written to since, is set aside (suspend.save.failed), never restored and never deleted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pyd.config.settings import STOP_SUSPEND, InstanceConfig
from pyd.config.store import load_config
from pyd.errors import PydError, UsageError
from pyd.instance.files import DATA_DISK, OS_DISK, InstanceFiles
from pyd.instance.registry import existing, name_option
from pyd.instance.saved_state import (
    RestoreMark,
    SavedState,
    Shape,
    differences,
    disks_changed,
    load_saved,
    remove_saved,
    set_aside,
    stamp,
    write_mark,
    write_saved,
)
from pyd.instance.state import load_state
from pyd.lifecycle.agent_proc import PROCESS_AGENT, HostAgent
from pyd.lifecycle.guest_power import SSH_GUEST, GuestPower
from pyd.lifecycle.locking import locked
from pyd.lifecycle.progress import Progress, phase
from pyd.lifecycle.stop import SHUTDOWN_TIMEOUT, power_off
from pyd.vm.backends.base import SuspendableBackend, VMBackend
from pyd.vm.backends.choice import backend_for_config, backend_kind

SAVED_DISKS = (OS_DISK, DATA_DISK)  # what a boot after the save would write to


@dataclass(frozen=True)
class SuspendResult:
    name: str
    already: bool  # it was suspended before this command
    save_bytes: int  # the save file's apparent size


def suspended(files: InstanceFiles) -> bool:
    return files.suspend_save.exists()


def _kind(backend: VMBackend) -> str:
    kind = backend_kind(backend)
    return kind.value if kind is not None else backend.name


def current_shape(
    backend: SuspendableBackend, cpus: int, memory_mib: int, files: InstanceFiles
) -> Shape:
    """What the VM is (or would boot) with: its image and arch from state.json."""
    state = load_state(files.state)
    if state is None:
        raise PydError(f"{files.state} is missing: the instance has never booted")
    return Shape(
        image_key=state.image_key,
        cpus=cpus,
        memory_mib=memory_mib,
        arch=state.arch,
        backend=_kind(backend),
        emulator=backend.emulator_version(),
    )


def suspend(name: str, progress: Progress, agent: HostAgent = PROCESS_AGENT) -> SuspendResult:
    """Stops the host agent and saves the running (or paused) VM to suspend.save, with its
    record; `pyd start` resumes it."""
    inst = existing(name)
    files = inst.files
    opt = name_option(inst.name)
    with locked(inst, progress):
        backend = backend_for_config(inst.name, load_config(files.config))
        vm = backend.state()
        if not vm.exists:
            if suspended(files):
                return SuspendResult(inst.name, True, files.suspend_save.stat().st_size)
            raise UsageError(
                f"instance {inst.name!r} is not running: there is nothing to suspend",
                hint=f"`pyd start{opt}` starts it",
            )
        if not isinstance(backend, SuspendableBackend):
            raise UsageError(
                f"`pyd suspend` is not supported yet for the {_kind(backend)} backend; "
                "nothing was changed",
                hint=f"`pyd stop{opt}` powers it off",
            )
        cpus, memory_mib = backend.shape()  # what it booted with, not a later `config set`
        shape = current_shape(backend, cpus, memory_mib, files)
        engine_ready = agent.ready_host(files) is not None
        with phase(progress, "agent"):
            agent.stop(files)
        try:
            with phase(progress, "save"):
                backend.save(files.suspend_save)
        except PydError:
            # libvirt lets the VM run on when the save fails: it gets its agent back.
            agent.launch(files, inst.name, progress)
            raise
        saved_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        # Stamped after the save: QEMU flushes the disks as it stops.
        disks = {d: stamp(files.root / d) for d in SAVED_DISKS}
        write_saved(files.suspend_record, SavedState(shape, saved_at, disks, engine_ready))
        return SuspendResult(inst.name, False, files.suspend_save.stat().st_size)


def suspend_instead_of_stop(
    name: str, progress: Progress, agent: HostAgent = PROCESS_AGENT
) -> SuspendResult | None:
    """`pyd stop` where config.toml says stop = "suspend": the VM saved as by `pyd suspend`.
    None when a plain stop is what runs: another setting, a VM not running, a backend that
    cannot suspend (said), or a config.toml that cannot be read (a stop must still work)."""
    inst = existing(name)
    try:
        cfg = load_config(inst.files.config)
        if cfg.stop != STOP_SUSPEND:
            return None
        backend = backend_for_config(inst.name, cfg)
        if not backend.state().exists:
            return None
    except PydError:
        return None
    if not isinstance(backend, SuspendableBackend):
        progress.info(f"the {_kind(backend)} backend cannot suspend yet: powering off instead")
        return None
    try:
        return suspend(inst.name, progress, agent)
    except UsageError:  # stopped meanwhile: the plain stop says what it finds
        return None


def _aside(files: InstanceFiles, progress: Progress, why: str) -> None:
    set_aside(files.suspend_save, files.suspend_failed)
    files.suspend_record.unlink(missing_ok=True)
    progress.info(
        f"the suspended VM cannot be resumed: {why}. Its save is kept as "
        f"{files.suspend_failed} and the VM boots afresh: the data disk is kept, what the "
        "guest had not yet written to it is lost"
    )


class _NotRestored(Exception):
    """The save did not restore: it is set aside, the VM boots afresh."""


def resume_saved(
    files: InstanceFiles,
    name: str,
    cfg: InstanceConfig,
    backend: VMBackend,
    progress: Progress,
    *,
    restart: bool,
    port_free: Callable[[int], bool],
    also_changed: tuple[str, ...] = (),
    guest: GuestPower = SSH_GUEST,
    agent: HostAgent = PROCESS_AGENT,
) -> str | None:
    """A suspended instance's VM (stopped, its save present, no agent running): the Docker
    host of its agent once it runs again from its save, the agent ready; None when it must
    boot afresh (the save is then gone: restored and powered off with --restart, or set
    aside). Raises, changing nothing, when the settings differ from the save's and
    `restart` is not given. `also_changed`: what else needs a fresh boot (new SSH keys)."""
    opt = name_option(name)
    try:
        saved = load_saved(files.suspend_record)
    except PydError as e:
        saved, unreadable = None, e.message
    else:
        unreadable = f"its record {files.suspend_record} is missing"
    if saved is None:
        _aside(files, progress, f"{unreadable}, so it cannot be checked")
        return None
    changed = disks_changed(saved, files.root)
    if changed:
        _aside(
            files,
            progress,
            f"{' and '.join(changed)} changed since the suspend (it booted without it)",
        )
        return None
    if not isinstance(backend, SuspendableBackend):
        raise UsageError(
            f"instance {name!r} is suspended under the {saved.shape.backend} backend, which "
            f"its settings no longer choose ({_kind(backend)})",
            hint=f"`pyd config set backend {saved.shape.backend}{opt}`, then `pyd start{opt}`",
        )
    diffs = [*differences(saved.shape, current_shape(backend, cfg.cpus, cfg.memory_mib, files))]
    diffs += also_changed
    if diffs and not restart:
        raise UsageError(
            f"instance {name!r} is suspended, and since the suspend: {'; '.join(diffs)}. "
            "pyd does not resume it with other settings; its save is kept",
            hint=f"`pyd start --restart{opt}` resumes it as it was, shuts it down cleanly and "
            "boots it with the new settings; or put the settings back and `pyd start` resumes it",
        )
    state = load_state(files.state)
    if state is not None and not port_free(state.ssh_port):
        # The saved VM forwards SSH from this very port: it could not listen.
        raise PydError(
            f"port {state.ssh_port} on 127.0.0.1, which the suspended VM forwards SSH from, "
            "is taken by another program; its save is kept",
            hint=f"stop that program, then `pyd start{opt}` again",
        )

    def restore(agent_waits: bool) -> None:
        try:
            with phase(progress, "restore"):
                backend.restore(files.suspend_save)
        except PydError as e:
            if backend.state().exists:  # a half-restored VM must not hold the disks
                backend.kill()
            _aside(files, progress, f"it did not restore ({e.message})")
            raise _NotRestored() from None
        if agent_waits:
            # It connects once told: told before the save's unlink (~0.07 s for a 2 GiB
            # guest's), which is off a warm start's critical path then.
            write_mark(files.restoring, RestoreMark(done=True, engine_ready=saved.engine_ready))
        remove_saved(files.suspend_save, files.suspend_record)

    try:
        if not diffs:
            # The agent starts up while the VM is restored: a warm start's critical path.
            return agent.launch(files, name, progress, meanwhile=lambda: restore(True))
        restore(False)
    except _NotRestored:
        return None
    progress.info(
        "resumed as it was suspended; shutting it down cleanly to apply: " + "; ".join(diffs)
    )
    with phase(progress, "shutdown"):
        power_off(files, backend, backend.state(), SHUTDOWN_TIMEOUT, guest)
    return None
