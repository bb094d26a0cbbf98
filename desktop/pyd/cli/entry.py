"""The `pyd` command's entry point (pyproject's [project.scripts], `python -m pyd`).

`pyd docker ARGS` and `pyd compose ARGS` go straight to pyd.guestdocker: their arguments are
docker's, untouched (see pyd.cli.docker_cmd), so there is nothing for typer to parse, and
not importing typer, rich and every other command's modules is a large part of a short
docker command's time (bench/guest_docker.py measures it). Everything else, including
`pyd --help`, is typer's (pyd.cli.main).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

PASS_THROUGH = frozenset({"docker", "compose"})  # pyd.guestdocker.tools.TOOLS, by name
GLOBAL_FLAGS = frozenset({"--debug"})  # pyd's global options (cli.main); none takes a value


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    i = 0
    while i < len(args) and args[i] in GLOBAL_FLAGS:
        i += 1
    if i < len(args) and args[i] in PASS_THROUGH:
        run_pass_through(args[i + 1 :], args[i], debug="--debug" in args[:i])
    from pyd.cli.main import main as full

    try:
        full(args)
    except SystemExit as done:
        if not alone():
            raise
        leave_now(done.code)


def exit_status(code: object) -> tuple[int, str | None]:
    """Pure: the process's exit status for SystemExit(code), and what Python would print to
    stderr for it (a message given as the code exits 1)."""
    if code is None:
        return 0, None
    if isinstance(code, int):
        return code, None
    return 1, str(code)


def alone() -> bool:
    """No thread but the main one would still run at a normal exit (daemon threads die then
    anyway): nothing is cut short by leaving at once."""
    return all(t.daemon or t is threading.main_thread() for t in threading.enumerate())


def leave_now(code: object) -> NoReturn:
    """Exits without the interpreter's teardown: finalising the modules of typer, rich,
    paramiko and libvirt takes 0.1-0.25 s of CPU after the command has finished, on every
    command and on a warm start's path to the user's first docker command. What a normal
    exit does that matters is done first: atexit callbacks (logging's flush), the streams."""
    status, message = exit_status(code)
    atexit._run_exitfuncs()
    if message is not None:
        print(message, file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, a closed stream: as Python, go on
            status = status or 120
    os._exit(status)


def run_pass_through(args: list[str], command: str, debug: bool) -> NoReturn:
    """`pyd COMMAND ARGS` (docker or compose); exits with docker's exit code, or pyd's for
    an expected failure (message and hint, as every other command)."""
    from pyd.cli.boundary import EXPECTED, expected_failure
    from pyd.guestdocker.streams import open_standard_fds

    open_standard_fds()

    # paramiko imports `invoke`, when installed, for ssh_config's `Match exec`, which pyd
    # never reads: a noticeable part of every docker command. Absent, paramiko does without it.
    if "invoke" not in sys.modules:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` then fails
    try:
        from pyd.cli.docker_launch import parse_invocation, run_docker
        from pyd.guestdocker.tools import TOOLS

        code = run_docker(parse_invocation(args), TOOLS[command])
    except EXPECTED as e:
        failure = expected_failure(e, debug)
        if failure is None:
            raise
        sys.exit(failure)
    sys.exit(code)
