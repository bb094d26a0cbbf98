"""The frames that carry a published UDP port's datagrams over one SSH channel.

SSH carries byte streams, so each datagram travels as a frame: a 7-byte header (kind: 1 byte,
flow id: 4 bytes, payload length: 2 bytes, all big-endian) and the payload. A flow is one host
peer (address, port); the guest helper (guest-image/overlay/usr/lib/pyd/udp-relay) gives each
flow its own UDP socket, so the container sees one source per host peer and its replies come
back framed with that flow's id. CLOSE (no payload) tells the helper a flow has expired.
A 2-byte length is enough: no UDP payload exceeds 65,535 bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!BIH")
MAX_PAYLOAD = 0xFFFF
MAX_FLOW = 0xFFFFFFFF


class FrameKind(enum.IntEnum):
    DATA = 0
    CLOSE = 1


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    flow: int
    payload: bytes = b""


def encode(kind: FrameKind, flow: int, payload: bytes = b"") -> bytes:
    """One frame's bytes. Raises ValueError on a payload or flow id that does not fit."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a datagram of {len(payload)} bytes does not fit in a frame")
    if not 0 <= flow <= MAX_FLOW:
        raise ValueError(f"flow id {flow} is out of range")
    return HEADER.pack(kind, flow, len(payload)) + payload


class FrameReader:
    """Splits a byte stream back into frames, whatever the pieces it arrives in."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by `data`; a partial one waits for the next call. Raises
        ValueError on an unknown kind: the stream is out of step and cannot be trusted."""
        self._buf += data
        frames: list[Frame] = []
        start = 0
        while len(self._buf) - start >= HEADER.size:
            kind, flow, length = HEADER.unpack_from(self._buf, start)
            end = start + HEADER.size + length
            if len(self._buf) < end:
                break
            try:
                frame_kind = FrameKind(kind)
            except ValueError:
                raise ValueError(f"unknown UDP frame kind {kind}") from None
            frames.append(Frame(frame_kind, flow, bytes(self._buf[start + HEADER.size : end])))
            start = end
        del self._buf[:start]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
