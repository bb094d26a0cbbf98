"""DNS messages on the wire (RFC 1035): a query's header and question read, a response
built. Only what a stub resolver's query holds: one question, uncompressed; an OPT record
(EDNS) in the additional section is ignored and not echoed, which RFC 6891 allows."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")  # id, flags, qd, an, ns, ar counts
TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
_QR = 0x8000
_OPCODE = 0x7800
_RD = 0x0100
_RA = 0x0080
_NAME_AT_12 = 0xC00C  # a compression pointer to the question's name, right after the header


class WireError(ValueError):
    """A message that is not a query this reads (too short, several questions, a pointer)."""


@dataclass(frozen=True)
class Query:
    ident: int
    flags: int
    name: str  # labels joined by dots, no trailing dot; "" for the root
    qtype: int
    qclass: int
    question: bytes  # the question section as received: a response echoes it


def parse_query(data: bytes) -> Query:
    if len(data) < HEADER.size:
        raise WireError("shorter than a header")
    ident, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if flags & _QR:
        raise WireError("a response, not a query")
    if qdcount != 1:
        raise WireError(f"{qdcount} questions")
    labels: list[str] = []
    at = HEADER.size
    while True:
        if at >= len(data):
            raise WireError("name runs past the end")
        size = data[at]
        at += 1
        if size == 0:
            break
        if size & 0xC0:
            raise WireError("compressed name in a question")
        label = data[at : at + size]
        if len(label) != size:
            raise WireError("label runs past the end")
        labels.append(label.decode("latin-1"))
        at += size
    if at + 4 > len(data):
        raise WireError("question without type and class")
    qtype, qclass = struct.unpack_from("!HH", data, at)
    return Query(ident, flags, ".".join(labels), qtype, qclass, data[HEADER.size : at + 4])


def response(query: Query, rcode: int, rdatas: Sequence[bytes] = (), ttl: int = 0) -> bytes:
    """The answer to `query`: each of `rdatas` a record of the question's own type and class,
    owned by the question's name. Recursion is offered, as a resolver's answers say."""
    flags = _QR | (query.flags & (_OPCODE | _RD)) | _RA | (rcode & 0xF)
    out = [HEADER.pack(query.ident, flags, 1, len(rdatas), 0, 0), query.question]
    for rdata in rdatas:
        out.append(struct.pack("!HHHIH", _NAME_AT_12, query.qtype, query.qclass, ttl, len(rdata)))
        out.append(rdata)
    return b"".join(out)


def error_response(data: bytes, rcode: int) -> bytes | None:
    """A header-only answer with `rcode` to a message parse_query refused; None when it has
    no header to answer."""
    if len(data) < HEADER.size:
        return None
    ident, flags = struct.unpack_from("!HH", data)
    return HEADER.pack(ident, _QR | (flags & (_OPCODE | _RD)) | _RA | rcode, 0, 0, 0, 0)
