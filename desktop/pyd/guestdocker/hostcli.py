"""A docker CLI on the host, when there is one: `pyd docker ARGS` runs it against the
instance instead of the guest's CLI (no SSH session and no process start in the emulated
guest, so it is faster), and the user sees the same behaviour either way.

The instance is named with `--context` (pyd's context, `pyd` or `pyd-NAME`) when that
context exists, which also wins over DOCKER_HOST and DOCKER_CONTEXT in the environment; after
`pyd start --no-context` there is none, and `--host` with the agent's endpoint is used
(launch.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from pyd.dockercli.context import META_FILE, config_dir, meta_dir_name
from pyd.guestdocker.tools import Tool


def context_exists(name: str) -> bool:
    """Whether the docker CLI has a context `name` (in $DOCKER_CONFIG or ~/.docker)."""
    return (config_dir() / "contexts" / "meta" / meta_dir_name(name) / META_FILE).is_file()


def docker_argv(
    docker: Path, endpoint: Sequence[str], tool: Tool, args: Sequence[str]
) -> list[str]:
    """`docker ENDPOINT [compose] ARGS`: docker's global options go before the subcommand."""
    return [str(docker), *endpoint, *tool.host_words, *args]


def run_host_docker(argv: Sequence[str]) -> int:
    """Runs the host's docker CLI with `argv`. On POSIX this process becomes docker
    (exec): exit code, signals and terminal are docker's own, and this never returns. On
    Windows (no exec there) docker runs as a child and its exit code is returned; Ctrl-C
    reaches it through the console, so pyd itself ignores it meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform != "win32":
        os.execv(argv[0], list(argv))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run(list(argv), check=False).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
