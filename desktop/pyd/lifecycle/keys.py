"""`pyd start --new-keys`: the restore path when an instance's SSH keys are lost."""

from __future__ import annotations

from pyd.instance.files import InstanceFiles
from pyd.instance.provision import new_keys
from pyd.lifecycle.agent_proc import PROCESS_AGENT, HostAgent
from pyd.lifecycle.guest_power import SSH_GUEST, GuestPower
from pyd.lifecycle.progress import Progress, phase
from pyd.lifecycle.stop import SHUTDOWN_TIMEOUT, power_off
from pyd.vm.backends.base import VMBackend, VMState


def renew_keys(
    files: InstanceFiles,
    backend: VMBackend,
    vm: VMState,
    progress: Progress,
    agent: HostAgent = PROCESS_AGENT,
    guest: GuestPower = SSH_GUEST,
) -> VMState:
    """New client and host keys. The guest installs the keys from its seed at each boot
    (guest-image/overlay/usr/lib/pyd/seed), so a VM up on the old ones is powered off first
    (over SSH while the old keys are there, else by the power button); the start then boots
    it on a seed with the new keys.
    Returns the VM's state after that."""
    if vm not in (VMState.STOPPED, VMState.ABSENT):
        with phase(progress, "agent"):
            agent.stop(files)
        with phase(progress, "shutdown"):
            power_off(files, backend, vm, SHUTDOWN_TIMEOUT, guest)
        vm = backend.state()
    new_keys(files)
    progress.info("new SSH keys made; the guest installs them as it boots")
    return vm
