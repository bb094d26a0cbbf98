r"""The framed mode of the agent's exec protocol (pyd.guestdocker.exec_protocol): the
command's streams travel inside the connection, for hosts without descriptor passing
(Windows, where the agent serves the named pipe `\\.\pipe\pyd-NAME.exec`) and POSIX hosts
where passing them fails. Pure: values in, bytes out.

After the request (with "framed": true), both directions carry frames: a 5-byte header
(type, then the payload's length, big-endian) and the payload, at most MAX_FRAME bytes.
- client to agent: STDIN data, STDIN_EOF, WINDOW (columns, rows), SIGNAL (its number),
  CLOSED (1 or 2: the client's stdout or stderr went away, as a reader of a pipe does);
- agent to client: STDOUT and STDERR data, STARTED, STDIN_ACK (bytes of stdin written to
  the command), EXIT (the JSON of exec_protocol.exit_message).

Back-pressure: the client sends stdin only within STDIN_CREDIT bytes not yet acknowledged,
so the agent never holds more than that and always reads the next frame at once (a
SIGNAL never waits behind stdin the command does not read). Output is sent as the client
reads it: the agent's copy waits on the connection, the guest's on its SSH window.
A frame outside this list or over the bound is a ProtocolError: the agent drops the
connection, which ends the command as a hang-up does.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable

from pyd.guestdocker.exec_protocol import ProtocolError, decode_message, exit_message

FRAME_HEADER = struct.Struct(">BI")
MAX_FRAME = 256 * 1024  # one read of the relay's (pyd.relay.pump.BUFSIZE)
STDIN_CREDIT = 1024 * 1024  # stdin in flight: sent by the client, not yet written by the agent
_WINDOW = struct.Struct(">HH")
_NUMBER = struct.Struct(">I")


class Kind(enum.IntEnum):
    STDIN = 1
    STDIN_EOF = 2
    WINDOW = 3
    SIGNAL = 4
    CLOSED = 5
    STDOUT = 16
    STDERR = 17
    STARTED = 18
    STDIN_ACK = 19
    EXIT = 20


TO_AGENT = frozenset({Kind.STDIN, Kind.STDIN_EOF, Kind.WINDOW, Kind.SIGNAL, Kind.CLOSED})
TO_CLIENT = frozenset(
    {Kind.STDOUT, Kind.STDERR, Kind.STARTED, Kind.STDIN_ACK, Kind.EXIT}
)
_EMPTY = frozenset({Kind.STDIN_EOF, Kind.STARTED})
_FIXED = {Kind.WINDOW: _WINDOW.size, Kind.SIGNAL: _NUMBER.size, Kind.STDIN_ACK: _NUMBER.size,
          Kind.CLOSED: 1}  # fmt: skip

Frame = tuple[Kind, bytes]
Read = Callable[[int], bytes]  # up to n bytes; b"" at the end (socket.recv)


def frame(kind: Kind, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME:
        raise ValueError(f"a frame of {len(payload)} bytes")
    return FRAME_HEADER.pack(kind, len(payload)) + payload


def window_frame(columns: int, rows: int) -> bytes:
    return frame(Kind.WINDOW, _WINDOW.pack(_clamp(columns), _clamp(rows)))


def signal_frame(signum: int) -> bytes:
    return frame(Kind.SIGNAL, _NUMBER.pack(int(signum)))


def ack_frame(n: int) -> bytes:
    return frame(Kind.STDIN_ACK, _NUMBER.pack(n))


def closed_frame(which: int) -> bytes:
    return frame(Kind.CLOSED, bytes([which]))


def exit_frame(code: int, error: str = "", hint: str = "") -> bytes:
    return frame(Kind.EXIT, exit_message(code, error, hint))


def decode_header(header: bytes, allowed: frozenset[Kind]) -> tuple[Kind, int]:
    """The frame's kind and payload length; ProtocolError for a kind this side may not
    receive, or a length out of bounds."""
    if len(header) != FRAME_HEADER.size:
        raise ProtocolError("short frame header")
    value, n = FRAME_HEADER.unpack(header)
    try:
        kind = Kind(value)
    except ValueError:
        raise ProtocolError(f"unknown frame type {value}") from None
    if kind not in allowed:
        raise ProtocolError(f"a {kind.name} frame in this direction")
    if n > MAX_FRAME:
        raise ProtocolError(f"a {kind.name} frame of {n} bytes")
    wanted = 0 if kind in _EMPTY else _FIXED.get(kind)
    if wanted is not None and n != wanted:
        raise ProtocolError(f"a {kind.name} frame of {n} bytes instead of {wanted}")
    if kind in (Kind.STDIN, Kind.STDOUT, Kind.STDERR) and n == 0:
        raise ProtocolError(f"an empty {kind.name} frame")  # the end has a frame of its own
    return kind, n


def read_frame(read: Read, allowed: frozenset[Kind]) -> Frame | None:
    """The next frame from `read`; None at the end between two frames, ProtocolError at an
    end inside one."""
    header = _read_exactly(read, FRAME_HEADER.size, at_start=True)
    if header is None:
        return None
    kind, n = decode_header(header, allowed)
    payload = _read_exactly(read, n, at_start=False) if n else b""
    assert payload is not None
    return kind, payload


def parse_window(payload: bytes) -> tuple[int, int]:
    columns, rows = _WINDOW.unpack(payload)
    if columns == 0 or rows == 0:
        raise ProtocolError(f"a window of {columns}x{rows}")
    return columns, rows


def parse_number(payload: bytes) -> int:
    """A SIGNAL's number or a STDIN_ACK's byte count."""
    value: int = _NUMBER.unpack(payload)[0]
    return value


def parse_closed(payload: bytes) -> int:
    which = payload[0]
    if which not in (1, 2):
        raise ProtocolError(f"CLOSED names stream {which}")
    return which


def parse_exit(payload: bytes) -> tuple[int, str, str]:
    """(code, error, hint) of an EXIT frame; error is "" when docker's code came back."""
    message = decode_message(payload)
    code = message.get("exit")
    if not isinstance(code, int) or isinstance(code, bool):
        raise ProtocolError("EXIT without a code")
    return code, str(message.get("error") or ""), str(message.get("hint") or "")


def _read_exactly(read: Read, n: int, at_start: bool) -> bytes | None:
    parts: list[bytes] = []
    left = n
    while left:
        data = read(left)
        if not data:
            if at_start and left == n:
                return None
            raise ProtocolError("the connection ended inside a frame")
        parts.append(data)
        left -= len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _clamp(n: int) -> int:
    return max(1, min(int(n), 0xFFFF))
