"""The command line the guest's shell runs for `pyd docker ARGS`, and the host environment it
takes along. Pure: values in, bytes out.

sshd hands the line to the user's shell (`$SHELL -c LINE`), so every argument is quoted with
shlex.quote, which keeps every byte (spaces, quotes, newlines, `$`, non-ASCII, empty
strings) inside single quotes. Arguments are encoded with os.fsencode: on POSIX hosts the
bytes of the host's own argv come back (surrogateescape), on Windows their UTF-8.

The line:

    printf 'pyd-pid=%s\\n' "$$" >&2     (without a terminal only: see run.py)
    cd -- WORKDIR || { message; exit 1; }
    trap : INT QUIT TERM HUP              (with a terminal: trap : INT QUIT TERM)
    [the tool's setup line: compose's finds `docker compose` or docker-compose, see tools.py]
    env K=V ... docker ARGS
    exit $?

The shell stays docker's parent, trapping the signals that pyd's forwarded Ctrl-C (a `kill`
of the whole process group) or the guest's PTY (Ctrl-C, Ctrl-\\ typed) send: docker gets them
and ends as it would locally, and the shell reports how it ended as a shell does, 128+N for
a signal. (sshd would report a signal death as an "exit-signal" request, which paramiko
drops.) A trap's command is reset to the default in docker itself, unlike an ignored signal.

With a terminal, SIGHUP is not trapped. When the session ends early (the host's terminal
closed, pyd killed, the connection lost) sshd closes the PTY, and the kernel sends SIGHUP to
the session leader only: this shell. It has to die of it, so that the kernel then hangs up
its foreground process group, docker; a shell that survived it would leave docker (and the
container it is attached to) running in the guest for ever. No exit code is lost: nobody is
left to read it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyd.guestdocker.tools import DOCKER, Tool
from pyd.guestdocker.winargs import host_path
from pyd.mounts.winpath import WINDOWS

PASSED_PREFIXES = ("DOCKER_", "COMPOSE_")
# These would point the guest's CLI at another engine or at host files the guest does not
# have: the guest's CLI talks to the guest's engine, with the guest's config.
NOT_PASSED = frozenset(
    {
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_CERT_PATH",
        "DOCKER_TLS",
        "DOCKER_TLS_VERIFY",
    }
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

PID_HEADER = b"pyd-pid="  # the first thing the guest's shell writes to stderr (no terminal)
PID_SEARCH_LIMIT = 64 * 1024  # how much of a start-up message may hold back the pid line


@dataclass(frozen=True)
class GuestCommand:
    """`docker ARGS` (the program `tool` says) in guest directory `workdir`, with `env`
    (name, value) added to the guest's environment."""

    workdir: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    tool: Tool = DOCKER


def passed_env(env: Mapping[str, str], platform: str) -> tuple[tuple[str, str], ...]:
    """The host variables the guest's docker CLI gets: DOCKER_* and COMPOSE_*, except the
    ones in NOT_PASSED, sorted by name. On Windows hosts COMPOSE_FILE's paths are
    translated and joined with ":", the guest's separator (so COMPOSE_PATH_SEPARATOR, which
    describes the host's list, stays behind)."""
    found = []
    for name, value in env.items():
        if not name.startswith(PASSED_PREFIXES) or name in NOT_PASSED or not _NAME.fullmatch(name):
            continue
        if platform == WINDOWS:
            if name == "COMPOSE_PATH_SEPARATOR":
                continue
            if name == "COMPOSE_FILE":
                sep = env.get("COMPOSE_PATH_SEPARATOR") or ";"
                value = ":".join(host_path(p) for p in value.split(sep))
        found.append((name, value))
    return tuple(sorted(found))


def command_line(command: GuestCommand, report_pid: bool, terminal: bool = False) -> bytes:
    """The line for the guest's shell. With `report_pid`, the shell's pid (docker's process
    group) is written to stderr first, as `pyd-pid=N` on a line of its own. `terminal`: the
    session has a PTY (the shell then dies of a hangup, see above)."""
    lines = []
    if report_pid:
        lines.append(f"printf '{PID_HEADER.decode()}%s\\n' \"$$\" >&2")
    lost = (
        f"pyd: cannot enter {command.workdir} in the guest; is its share mounted? "
        "(`pyd mount ls` shows the shares)"
    )
    lines.append(
        f"cd -- {_q(command.workdir)} 2>/dev/null || {{ printf '%s\\n' {_q(lost)} >&2; exit 1; }}"
    )
    lines.append("trap : INT QUIT TERM" if terminal else "trap : INT QUIT TERM HUP")
    setup = command.tool.guest_setup()
    if setup:
        lines.append(setup)
    env = "".join(f"{_q(f'{k}={v}')} " for k, v in command.env)
    program = command.tool.guest_program
    lines.append(f"{'env ' + env if env else ''}{program}{_quoted(command.args)}")
    lines.append("exit $?")
    return os.fsencode("\n".join(lines))


def kill_command(signal_name: str, pgid: int) -> str:
    """The line that sends SIGNAL_NAME ("INT") to process group `pgid`, for whichever shell
    runs it: bash and dash want `--` before a negative pid, busybox refuses it."""
    return f"kill -s {signal_name} -- -{pgid} 2>/dev/null || kill -s {signal_name} -{pgid}"


def parse_pid_line(line: bytes) -> int | None:
    """The pid in a `pyd-pid=N` line (without its newline), or None if it is not one."""
    if not line.startswith(PID_HEADER):
        return None
    digits = line[len(PID_HEADER) :]
    return int(digits) if digits.isdigit() and len(digits) < 12 else None


def _q(word: str) -> str:
    return shlex.quote(word)


def _quoted(args: Sequence[str]) -> str:
    return "".join(" " + shlex.quote(a) for a in args)


class PidLine:
    """Takes the `pyd-pid=N` line out of the start of stderr, fed in pieces as they come;
    what the guest's shell prints before it (its start-up files may) passes through."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.done = False
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        """The bytes of `data` (and of earlier calls) to show now."""
        self._pending += data
        shown = []
        while not self.done:
            line, newline, rest = self._pending.partition(b"\n")
            if not newline:
                if len(self._pending) > PID_SEARCH_LIMIT:
                    self.done = True  # not coming: show everything
                break
            pid = parse_pid_line(line)
            self._pending = rest
            if pid is None:
                shown.append(line + newline)
            else:
                self.pid, self.done = pid, True
        if self.done:
            shown.append(self._pending)
            self._pending = b""
        return b"".join(shown)

    def rest(self) -> bytes:
        """What is still held back, at the end of the stream."""
        self.done = True
        rest, self._pending = self._pending, b""
        return rest
