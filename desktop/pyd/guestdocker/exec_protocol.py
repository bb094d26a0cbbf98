"""What `pyd docker` and the host agent say to each other over the agent's exec socket, so
that a docker command runs on the agent's open SSH connection instead of a new one (the
handshake with an emulated guest is most of a short command's time). Pure: values in,
bytes out.

The client connects and sends one request: a 4-byte big-endian length, then that many bytes
of JSON (the command and, for a terminal session, the host's TERM). Its stdin, stdout and
stderr travel as SCM_RIGHTS file descriptors with the first byte, so the agent reads and
writes them directly: no byte of the command's streams passes through the socket.

After that, both sides send JSON lines:
- client to agent: {"signal": N} for a signal the client received (Ctrl-C, SIGWINCH, ...);
- agent to client: {"started": true} once the command runs in the guest (an interactive
  client then puts its terminal in raw mode); last {"exit": N}, docker's exit code, or
  {"exit": N, "error": MESSAGE, "hint": HINT} when no code came back (pyd's own failure,
  exit code N).

The client hanging up ends the command, as a closed SSH connection would.

Where descriptors cannot be passed (Windows; a POSIX host where passing them fails, or
PYD_EXEC_FRAMED=1), the request says "framed": true and comes without them, with the
client's window size for a terminal session; the streams, signals and answers then travel
as frames (pyd.guestdocker.exec_frames) instead of JSON lines.

Where the agent serves it: exec_endpoint(), a Unix socket in the instance directory on POSIX
hosts, the named pipe `\\\\.\\pipe\\pyd-NAME.exec` (current user only) on Windows.

Arguments are strings as pyd's argv holds them: bytes that are not UTF-8 are lone
surrogates (surrogateescape), which JSON's \\u escapes carry both ways unchanged.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

from pyd.guestdocker.remote import GuestCommand
from pyd.guestdocker.tools import COMPOSE, DOCKER
from pyd.instance.files import EXEC_SOCK

HEADER = struct.Struct(">I")
MAX_REQUEST = 16 * 1024 * 1024  # far above any command line the OS would pass (ARG_MAX)
STREAM_FDS = 3  # stdin, stdout, stderr


class ProtocolError(ValueError):
    """A message that is not what the protocol says."""


@dataclass(frozen=True)
class ExecRequest:
    command: GuestCommand
    term: str | None = None  # the host's TERM when the session gets a PTY, else None
    framed: bool = False  # the streams come as frames, not as descriptors
    window: tuple[int, int] | None = None  # framed with a PTY: the client's (columns, rows)

    @property
    def interactive(self) -> bool:
        return self.term is not None


def encode_request(request: ExecRequest) -> bytes:
    c = request.command
    body = json.dumps(
        {
            "workdir": c.workdir,
            "args": list(c.args),
            "env": [list(pair) for pair in c.env],
            "compose": c.tool is COMPOSE,  # a flag on the wire, as older agents read it
            "term": request.term,
            **({"framed": True, "window": request.window} if request.framed else {}),
        }
    ).encode("ascii")  # ensure_ascii: lone surrogates become \\udcXX escapes
    return HEADER.pack(len(body)) + body


def request_length(header: bytes) -> int:
    """The body's length from the 4-byte header; ProtocolError when it is out of bounds."""
    if len(header) != HEADER.size:
        raise ProtocolError("short request header")
    n: int = HEADER.unpack(header)[0]
    if not 0 < n <= MAX_REQUEST:
        raise ProtocolError(f"request of {n} bytes")
    return n


def decode_request(body: bytes) -> ExecRequest:
    data = decode_message(body)
    workdir = _field(data, "workdir", str)
    args = _field(data, "args", list)
    env = _field(data, "env", list)
    compose = _field(data, "compose", bool)
    term = data.get("term")
    if not all(isinstance(a, str) for a in args):
        raise ProtocolError("args must be strings")
    if not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in env
    ):
        raise ProtocolError("env must be [name, value] pairs of strings")
    if term is not None and not isinstance(term, str):
        raise ProtocolError("term must be a string or null")
    framed = data.get("framed", False)
    if not isinstance(framed, bool):
        raise ProtocolError("framed must be a boolean")
    window = data.get("window")
    if window is not None:
        if not (
            framed
            and isinstance(window, list)
            and len(window) == 2
            and all(isinstance(n, int) and 0 < n <= 0xFFFF for n in window)
        ):
            raise ProtocolError("window must be [columns, rows] of a framed request")
        window = (window[0], window[1])
    tool = COMPOSE if compose else DOCKER
    command = GuestCommand(workdir, tuple(args), tuple((k, v) for k, v in env), tool)
    return ExecRequest(command, term, framed, window)


@dataclass(frozen=True)
class ExecEndpoint:
    kind: Literal["unix", "pipe"]
    address: str  # the socket's path, or the pipe's name


def exec_endpoint(platform: str, instance: str, root: PurePath) -> ExecEndpoint:
    """Where the agent of `instance` (its directory `root`) serves commands on `platform`
    (sys.platform's values): a named pipe on Windows (no AF_UNIX in CPython there)."""
    if platform == "win32":
        # A dot: no instance name has one, so no instance's Docker API pipe (`pyd-NAME`) is
        # ever this name ("pyd-x-exec" would be the API pipe of an instance "x-exec").
        return ExecEndpoint("pipe", rf"\\.\pipe\pyd-{instance}.exec")
    return ExecEndpoint("unix", str(root / EXEC_SOCK))


def encode_message(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode("ascii") + b"\n"


def decode_message(line: bytes) -> dict[str, Any]:
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"message is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ProtocolError("message is not an object")
    return data


def signal_message(signum: int) -> bytes:
    return encode_message({"signal": int(signum)})


def started_message() -> bytes:
    return encode_message({"started": True})


def exit_message(code: int, error: str = "", hint: str = "") -> bytes:
    message: dict[str, Any] = {"exit": code}
    if error:
        message.update(error=error, hint=hint)
    return encode_message(message)


def _field(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise ProtocolError(f"{name} must be a {kind.__name__}")
    return value
