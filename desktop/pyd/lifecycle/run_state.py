"""An instance's state as `pyd status`, `pyd list` and the tray name it: apart from
pyd.lifecycle.status, whose imports (images, their signatures, the backends) a reader of the
state alone, the tray, need not pay for (~10 MB)."""

from __future__ import annotations

import enum

from pyd.agent.status_file import AgentState


class RunState(enum.StrEnum):
    """What `pyd status` and `pyd list` call an instance's state (shown and in --json)."""

    RUNNING = "running"  # the VM runs and the agent is ready
    PAUSED = "paused"
    RESTARTING = "restarting"  # the keeper is starting the agent again
    DEGRADED = "degraded"  # the VM runs but nothing carries the Docker socket
    STOPPED = "stopped"
    SUSPENDED = "suspended"  # stopped, its memory saved (`pyd suspend`): `pyd start` resumes it
    UNKNOWN = "unknown"  # the backend cannot tell
    BROKEN = "broken"  # config.toml or state.json cannot be read
    # The agent's own state, while it is not ready.
    STARTING = AgentState.STARTING.value
    RECONNECTING = AgentState.RECONNECTING.value
    FAILED = AgentState.FAILED.value
