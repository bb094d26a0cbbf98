r"""Whether the process serving the agent's exec pipe (`\\.\pipe\pyd-NAME.exec`) is the
instance's agent (pyd issue 17). A pipe's name is anyone's to take: another local user, or
any process that got it first while the agent was down, could serve it and receive the
user's commands and stdin. The pipe's DACL stops another user connecting to the agent, not
the client connecting to someone else. So the client (guestdocker.agent_link) opens the
pipe allowing identification only (SQOS: the server cannot impersonate it), then uses the
pipe only when its server's pid is the one the agent recorded for itself (agent.pid, the
record `pyd stop` trusts); otherwise the command runs over SSH, with a warning.

The decision and its message are pure; the server's pid comes from the Windows edge in
agent_link, the agent's from its record here.
"""

from __future__ import annotations

from pathlib import Path

from pyd.errors import UsageError
from pyd.host.process_control import read_pid_record
from pyd.host.process_identity import is_running
from pyd.instance.registry import instance

# CreateFile's SQOS flags (winbase.h): the server of the pipe may identify the client, never
# impersonate it. Without them a client is opened at SecurityImpersonation.
SECURITY_SQOS_PRESENT = 0x00100000
SECURITY_IDENTIFICATION = 0x00010000  # SecurityIdentification << 16
PIPE_CLIENT_SQOS = SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION

_PIPE_PREFIX = "\\\\.\\pipe\\pyd-"
_EXEC_SUFFIX = ".exec"  # as guestdocker.exec_protocol.exec_endpoint names it


def exec_pipe_instance(pipe: str) -> str | None:
    r"""The instance whose exec pipe is `pipe` (`\\.\pipe\pyd-NAME.exec`), or None."""
    if not (pipe.startswith(_PIPE_PREFIX) and pipe.endswith(_EXEC_SUFFIX)):
        return None
    name = pipe[len(_PIPE_PREFIX) : -len(_EXEC_SUFFIX)]
    return name or None


def agent_pid_record(pipe: str) -> Path | None:
    """agent.pid of the instance that `pipe` belongs to; None for a pipe of no instance."""
    name = exec_pipe_instance(pipe)
    if name is None:
        return None
    try:
        return instance(name).files.agent_pid
    except UsageError:  # not an instance name: nothing of ours serves it
        return None


def recorded_agent_pid(record: Path) -> int | None:
    """The pid in the agent's record while that very process (its start time too) runs;
    None when the record is missing or names a process that has ended."""
    identity = read_pid_record(record)
    if identity is None or not is_running(identity):
        return None
    return identity.pid


def pipe_server_trusted(server_pid: int | None, agent_pid: int | None) -> bool:
    """The pipe may carry the command: its server is known to be the recorded agent."""
    return server_pid is not None and agent_pid is not None and server_pid == agent_pid


def untrusted_pipe_warning(pipe: str, server_pid: int | None, agent_pid: int | None) -> str:
    """One line for stderr when the pipe is not used."""
    fallback = "pyd ran the command over SSH instead"
    if server_pid is None:
        return f"pyd: warning: cannot tell which process serves {pipe}; {fallback}"
    if agent_pid is None:
        return (
            f"pyd: warning: {pipe} is served by process {server_pid}, and no running agent "
            f"of this instance is recorded; {fallback}"
        )
    return (
        f"pyd: warning: {pipe} is served by another process (pid {server_pid}), not this "
        f"instance's agent (pid {agent_pid}); {fallback}"
    )
