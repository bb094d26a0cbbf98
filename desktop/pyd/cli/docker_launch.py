"""`pyd docker ARGS` and `pyd compose ARGS` end to end: pyd's own leading options, then the
host's docker CLI (when there is one, and for compose when it has the compose plugin) or the
guest's over SSH.

The guest's CLI runs on the agent's SSH connection (agent_link: its Unix socket, or its
named pipe on Windows), or, where no agent answers (an agent from an older pyd, none
running), on a new connection made here with
the instance's key and its pinned host key (direct), as `pyd ssh` does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyd.config.settings import DEFAULT_INSTANCE
from pyd.errors import PydError, UsageError
from pyd.guestdocker import agent_link, terminal
from pyd.guestdocker.exec_protocol import exec_endpoint
from pyd.guestdocker.hostcli import context_exists, docker_argv, run_host_docker
from pyd.guestdocker.remote import GuestCommand, passed_env
from pyd.guestdocker.shim import find_docker
from pyd.guestdocker.streams import HostStreams
from pyd.guestdocker.tools import COMPOSE, DOCKER, Tool
from pyd.guestdocker.workdir import UNSHARED_WORKDIR, guest_workdir, unshared_error
from pyd.host.env import this_host
from pyd.instance.registry import Instance, existing, name_option
from pyd.instance.state import load_state
from pyd.lifecycle.agent_proc import agent_running, agent_status
from pyd.mounts.winpath import WINDOWS

if TYPE_CHECKING:
    from pyd.mounts.shares import Share

USAGE = "pyd docker|compose [-n NAME] [--via-guest] [--] ARGS..."


@dataclass(frozen=True)
class Invocation:
    instance: str = DEFAULT_INSTANCE
    via_guest: bool = False
    args: tuple[str, ...] = ()


def parse_invocation(args: Sequence[str]) -> Invocation:
    """pyd's own options, which come before docker's: `-n/--name NAME` (also `-nNAME`,
    `--name=NAME`) and `--via-guest`; `--` ends them. From the first other word on,
    everything is docker's, untouched: `pyd docker run -n x` passes `-n` to docker run, and
    `pyd docker --help` shows docker's help. (docker has no global `-n`, `--name` or
    `--via-guest`, so nothing docker accepts first is taken.)"""
    instance, via_guest = DEFAULT_INSTANCE, False
    rest = list(args)
    while rest and rest[0] != "--":
        arg = rest[0]
        if arg == "--via-guest":
            via_guest = True
        elif arg in ("-n", "--name"):
            if len(rest) < 2:
                raise UsageError(f"{arg} needs an instance name", hint=f"usage: {USAGE}")
            instance = rest.pop(1)
        elif arg.startswith("--name="):
            instance = arg.split("=", 1)[1]
        elif arg.startswith("-n") and not arg.startswith("--"):
            instance = arg[2:]
        else:
            break  # docker's first word
        rest.pop(0)
    if rest[:1] == ["--"]:
        rest.pop(0)
    return Invocation(instance, via_guest, tuple(rest))


def run_docker(inv: Invocation, tool: Tool) -> int:
    """Runs the command; returns docker's exit code (or does not return: see hostcli)."""
    tool, args = as_compose(tool, inv.args)
    inst = existing(inv.instance)
    if not agent_running(inst.files):
        raise PydError(
            f"instance {inst.name!r} is not running",
            hint=f"start it with `pyd start{name_option(inst.name)}`",
        )
    if not inv.via_guest:
        docker = find_docker(os.environ.get("PATH", os.defpath))
        if docker is not None and use_host_cli(tool, _host_compose):
            from pyd.config.settings import context_name

            context = context_name(inst.name)
            # The context also wins over DOCKER_HOST and DOCKER_CONTEXT in the environment;
            # after `pyd start --no-context` there is none: the agent's endpoint then.
            if context_exists(context):
                endpoint = ["--context", context]
            else:
                endpoint = ["--host", _docker_host(inst)]
            return run_host_docker(docker_argv(docker, endpoint, tool, args))
    return run_via_guest(inst, tool, args)


def as_compose(tool: Tool, args: tuple[str, ...]) -> tuple[Tool, tuple[str, ...]]:
    """`pyd docker compose ARGS` is `pyd compose ARGS`: the same host command, and without
    the host's plugin the guest's compose, with compose's own reading of ARGS (its files,
    Windows paths). With docker's global options first, it stays docker's command."""
    if tool is DOCKER and args[:1] == ("compose",):
        return COMPOSE, args[1:]
    return tool, args


def use_host_cli(tool: Tool, host_has_compose: Callable[[], bool]) -> bool:
    """Whether this machine's docker CLI (there is one) can run `tool`: docker always;
    compose only with its plugin, else the guest's compose runs it (issue 20). Asked only for
    compose, so `pyd docker` pays nothing for it."""
    return tool is not COMPOSE or host_has_compose()


def _host_compose() -> bool:
    from pyd.dockercli.context import config_dir
    from pyd.guestdocker.compose_plugin import host_has_compose

    return host_has_compose(config_dir(), sys.platform, os.environ)


def run_via_guest(inst: Instance, tool: Tool, args: Sequence[str]) -> int:
    """`docker ARGS` (`tool` says which program) by the guest's docker CLI, in the guest
    directory that shows the current one: on the agent's SSH connection when the agent
    serves its exec socket, on a connection of its own otherwise."""
    state = load_state(inst.files.state)
    if state is None:
        raise UsageError(
            f"{inst.name!r} has never started",
            hint=f"run `pyd start{name_option(inst.name)}` first",
        )
    sys.stdout.flush()
    sys.stderr.flush()
    endpoint = exec_endpoint(sys.platform, inst.name, inst.files.root)
    if endpoint.kind == "pipe" or inst.files.exec_sock.exists():
        prepared = _prepare(inst, tool, args)
        code = agent_link.run_through_agent(endpoint, *prepared)
        if code is not None:
            return code
        return run_direct(inst, state.ssh_port, lambda: prepared)
    return run_direct(inst, state.ssh_port, lambda: _prepare(inst, tool, args))


def run_direct(
    inst: Instance, port: int, prepare: Callable[[], tuple[GuestCommand, HostStreams]]
) -> int:
    """On a new SSH connection. The handshake with an emulated guest takes longest: it goes
    on while `prepare` makes the command (and is dropped if that fails)."""
    from pyd.guestdocker.direct import Connecting
    from pyd.guestdocker.run import run_in_guest

    connecting = Connecting(inst, port)
    connecting.start()
    try:
        command, streams = prepare()
    except BaseException:
        connecting.close()
        raise
    client = connecting.result()
    try:
        transport = client.get_transport()
        assert transport is not None
        return run_in_guest(transport, command, streams)
    finally:
        client.close()


def _prepare(inst: Instance, tool: Tool, args: Sequence[str]) -> tuple[GuestCommand, HostStreams]:
    """The guest's command for `docker ARGS` here, and the streams it gets."""
    from pyd.config.store import load_config  # imported here: while the handshake goes on

    host = this_host()
    shares = load_config(inst.files.config).mounts
    workdir = _guest_workdir(shares, host.platform, tool.needs_workdir(args), inst.name)
    streams = HostStreams.standard()
    if tool.wants_terminal(args) and not streams.interactive():
        # Windows: mintty's pipes look like a terminal to its user, not to docker.
        problem = terminal.no_console_error(streams.stdin)
        if problem is not None:
            raise problem
    command = GuestCommand(
        workdir=workdir,
        args=tuple(tool.translate_args(args, host.platform)),
        env=passed_env(os.environ, host.platform),
        tool=tool,
    )
    return command, streams


def host_directories(env: Mapping[str, str], platform: str) -> list[str]:
    """The current directory as the user knows it: the shell's $PWD when it names this
    directory (through a symlinked path, which may be the shared one), then the physical
    path."""
    physical = os.getcwd()
    logical = env.get("PWD", "")
    if platform != WINDOWS and logical.startswith("/") and logical != physical:
        try:
            if os.path.samefile(logical, physical):
                return [logical, physical]
        except OSError:
            pass
    return [physical]


def _guest_workdir(shares: Sequence[Share], platform: str, needed: bool, name: str) -> str:
    candidates = host_directories(os.environ, platform)
    for host_dir in candidates:
        try:
            found = guest_workdir(host_dir, shares, platform)
        except UsageError:
            found = None  # a directory the guest cannot be shown (a network path)
        if found is not None:
            return found
    if needed:
        raise unshared_error(candidates[0], shares, name_option(name))
    return UNSHARED_WORKDIR


def _docker_host(inst: Instance) -> str:
    status = agent_status(inst.files)
    if status is None or not status.docker_host:
        raise PydError(
            f"the host agent of {inst.name!r} reports no docker endpoint yet",
            hint=f"`pyd status{name_option(inst.name)}` shows its state",
        )
    return status.docker_host
