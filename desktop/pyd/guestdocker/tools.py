"""The two programs behind `pyd docker ARGS` and `pyd compose ARGS`: the docker CLI, and its
compose plugin. What they differ in (the words the host's docker CLI is given, how pyd reads
their arguments, how the guest's shell finds the program) is held by one value, which each
step asks, instead of a flag handed down through every signature.

pyd reads docker's own command line (cmdline, workdir, winargs); compose's it does not know,
so of every compose command it assumes the safe thing: that it may read files in the current
directory, and that it asks for no terminal (pyd does not look for `-t`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyd.guestdocker.cmdline import wants_terminal
from pyd.guestdocker.winargs import translate_args, translate_compose_args
from pyd.guestdocker.workdir import needs_workdir


@dataclass(frozen=True)
class Tool:
    """One program `pyd NAME ARGS` runs, and how its ARGS are read."""

    name: str  # `pyd NAME`
    host_words: tuple[str, ...]  # the host's CLI runs `docker GLOBAL_OPTIONS HOST_WORDS ARGS`
    # The guest's shell runs `GUEST_SETUP` (a line, or ""), then `GUEST_PROGRAM ARGS`.
    guest_setup: Callable[[], str]
    guest_program: str
    needs_workdir: Callable[[Sequence[str]], bool]  # may ARGS read files in the current dir
    translate_args: Callable[[Sequence[str], str], list[str]]  # host paths, for a platform
    wants_terminal: Callable[[Sequence[str]], bool]  # whether ARGS ask for one (-t)


# Where the docker CLI looks for the compose plugin (docker/cli: cli-plugins/manager), after
# the user's own ~/.docker/cli-plugins.
COMPOSE_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
NO_COMPOSE = 127  # as a shell says "command not found"


def _choose_compose() -> str:
    """Sets "$@" to `docker compose`, or to the standalone `docker-compose`; exits 127 with a
    message when the guest has neither. Looks for the plugin's file itself: asking
    `docker compose version` would start one more process in an emulated guest."""
    dirs = " ".join(['"$HOME/.docker/cli-plugins"', *COMPOSE_PLUGIN_DIRS])
    missing = (
        "pyd: the guest has no Docker Compose (neither the docker compose plugin nor "
        "docker-compose); install it in the guest, or install Docker Compose on this machine "
        "next to a docker CLI"
    )
    return (
        "set --; "
        f'for d in {dirs}; do [ -x "$d/docker-compose" ] && set -- docker compose && break; done; '
        "if [ $# -eq 0 ] && command -v docker-compose >/dev/null 2>&1; then "
        "set -- docker-compose; fi; "
        f"[ $# -gt 0 ] || {{ printf '%s\\n' {shlex.quote(missing)} >&2; exit {NO_COMPOSE}; }}"
    )


def _no_setup() -> str:
    return ""


def _always(_args: Sequence[str]) -> bool:
    return True


def _never(_args: Sequence[str]) -> bool:
    return False


DOCKER = Tool(
    name="docker",
    host_words=(),
    guest_setup=_no_setup,
    guest_program="docker",
    needs_workdir=needs_workdir,
    translate_args=translate_args,
    wants_terminal=wants_terminal,
)
COMPOSE = Tool(
    name="compose",
    host_words=("compose",),
    guest_setup=_choose_compose,
    guest_program='"$@"',
    needs_workdir=_always,
    translate_args=translate_compose_args,
    wants_terminal=_never,
)
TOOLS = {tool.name: tool for tool in (DOCKER, COMPOSE)}
