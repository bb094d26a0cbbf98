"""What the agent says about the instance once it was ready: from the VM's state (as its
backend reports it) and the SSH link's (down for a reason, or up), the state, error and hint
of the status file, and the message every Docker call gets while the engine is out of reach.
Pure, so every combination is tested without a VM."""

from __future__ import annotations

from dataclasses import dataclass

from pyd.agent.status_file import AgentState
from pyd.vm.backends.base import VMState


def gone(vm: VMState | None) -> bool:
    """No QEMU process runs for the VM (stopped, or no VM at all); None: cannot be told."""
    return vm is not None and not vm.exists


@dataclass(frozen=True)
class Verdict:
    state: AgentState
    error: str = ""
    hint: str = ""
    docker: str = ""  # what a Docker client is told; "" while the engine is reachable


def verdict(vm: VMState | None, link_down: str) -> Verdict:
    """`vm`: the VM's state, None when it cannot be told; `link_down`: why the SSH link is
    down, "" while it is up."""
    if gone(vm):
        return Verdict(
            AgentState.FAILED,
            "the VM stopped unexpectedly (its QEMU process is gone)",
            "run `pyd start` to boot it again; `pyd logs` shows the guest console",
            "pyd: the VM stopped unexpectedly; run `pyd start` to boot it again",
        )
    if vm is VMState.PAUSED:
        return Verdict(
            AgentState.RECONNECTING,
            "the VM is paused",
            "`pyd start` resumes it",
            "pyd: the VM is paused; `pyd start` resumes it",
        )
    if link_down:
        return Verdict(
            AgentState.RECONNECTING,
            f"the SSH link to the VM is down ({link_down}); reconnecting",
            "pyd retries every half second by itself; Docker calls fail until it is back",
            f"pyd: the SSH link to the VM is down ({link_down}), reconnecting; "
            "try again in a few seconds",
        )
    return Verdict(AgentState.READY)
