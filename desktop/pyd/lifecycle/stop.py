"""`pyd stop` and `pyd delete`. Neither needs a readable config.toml or state.json: the
backend comes from the config when it can be read, else every backend is asked."""

from __future__ import annotations

import contextlib
import shutil
import time

from pyd.config.settings import context_name
from pyd.dockercli.context import remove_context
from pyd.errors import PydError
from pyd.host.paths import images_dir
from pyd.image.prune import forget_use
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import existing
from pyd.lifecycle.agent_proc import PROCESS_AGENT, HostAgent
from pyd.lifecycle.guest_power import SSH_GUEST, GuestPower
from pyd.lifecycle.locking import locked
from pyd.lifecycle.progress import Progress, phase
from pyd.vm.backends.base import VMBackend, VMState
from pyd.vm.backends.choice import backends_to_stop

SHUTDOWN_TIMEOUT = 60.0
# How long a guest that accepted `poweroff` over SSH gets before the power button is
# pressed too (of the shutdown timeout): its ::shutdown script gives dockerd 20 s.
SSH_POWEROFF_SHARE = 0.5
_POLL = 0.05  # how often the VM's state is asked while it powers off: a local call
_DOWN = (VMState.STOPPED, VMState.ABSENT)


def stop(
    name: str,
    progress: Progress,
    timeout: float = SHUTDOWN_TIMEOUT,
    agent: HostAgent = PROCESS_AGENT,
    guest: GuestPower = SSH_GUEST,
) -> bool:
    """Stops agent and guest (clean poweroff, forced after `timeout`). False when the
    VM was not running."""
    inst = existing(name)
    with locked(inst, progress):
        # Before the agent stops: a failure here must not leave the VM without Docker.
        backends, unreadable = backends_to_stop(inst.name)
        if unreadable:
            progress.info(f"{unreadable}; stopping the VM with whichever backend runs it")
        with phase(progress, "agent"):
            agent.stop(inst.files)
        states = [(b, _state(b, probing=bool(unreadable))) for b in backends]
        up = [(b, vm) for b, vm in states if vm not in _DOWN]
        if not up:
            return False
        with phase(progress, "shutdown"):
            for backend, vm in up:
                power_off(inst.files, backend, vm, timeout, guest)
        return True


def power_off(
    files: InstanceFiles,
    backend: VMBackend,
    vm: VMState,
    timeout: float,
    guest: GuestPower = SSH_GUEST,
) -> None:
    """The guest asked over SSH first (a guest without a power button answers that too),
    then the backend's button, forced off once `timeout` has passed. A paused guest cannot
    answer SSH: the backend resumes it and presses the button, as it always did."""
    if vm is not VMState.RUNNING or not guest.poweroff(files):
        backend.shutdown(timeout)  # as without SSH: the button, forced after `timeout`
        return
    began = time.monotonic()
    while time.monotonic() < began + timeout * SSH_POWEROFF_SHARE:
        if backend.state() in _DOWN:
            return
        time.sleep(_POLL)
    backend.shutdown(max(0.0, began + timeout - time.monotonic()))


def delete(name: str, progress: Progress, agent: HostAgent = PROCESS_AGENT) -> None:
    """Removes the VM, every file of the instance (its data disk too) and its context."""
    inst = existing(name)
    with locked(inst, progress):
        backends, unreadable = backends_to_stop(inst.name)
        if unreadable:
            progress.info(f"{unreadable}; removing the VM from every backend that has it")
        agent.stop(inst.files, timeout=5)
        with phase(progress, "vm-delete"):
            for backend in backends:
                try:
                    backend.kill()
                    if backend.state() is not VMState.ABSENT:
                        backend.delete()
                except PydError:
                    if not unreadable:
                        raise
                    # Probing: this backend does not run it (or cannot be reached).
        remove_context(context_name(inst.name))
        with phase(progress, "files"):
            # The lock file stays until the lock is released (Windows cannot delete an
            # open file); everything else goes now.
            for path in inst.files.root.iterdir():
                if path == inst.files.start_lock:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            forget_use(images_dir(), inst.files.root)  # its images are free for prune now
    with contextlib.suppress(OSError):  # a start that queued behind us may own it now
        inst.files.start_lock.unlink()
        inst.files.root.rmdir()


def _state(backend: VMBackend, probing: bool) -> VMState:
    """A backend that fails while probing does not run the VM (libvirt absent or down)."""
    try:
        return backend.state()
    except PydError:
        if not probing:
            raise
        return VMState.ABSENT
