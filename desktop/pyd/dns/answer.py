"""A query and what the host's resolver said of its name, to the response the guest gets
(pure). The host's lookup is asked for every address of the name at once, whatever the
query's type: a name that exists with addresses of the other family only is NOERROR with no
records, never NXDOMAIN, which musl (Alpine) would take for the whole name's absence."""

from __future__ import annotations

import enum
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyd.dns.wire import (
    CLASS_IN,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    SERVFAIL,
    TYPE_A,
    TYPE_AAAA,
    Query,
    response,
)

# The host's resolver gives no TTL: answers are kept briefly, so that an edit of the hosts
# file or a VPN coming up shows within seconds, as on the host.
TTL = 5
# At most this many records: the answer stays within 512 bytes (UDP without EDNS), with
# room for a long name twice, so it is never truncated.
MAX_RECORDS = 8


class Outcome(enum.Enum):
    FOUND = "found"  # addresses (possibly none of the asked family)
    NO_NAME = "no-name"  # the name does not exist: NXDOMAIN
    FAILED = "failed"  # the resolver could not tell (no network, timeout): SERVFAIL


@dataclass(frozen=True)
class Lookup:
    outcome: Outcome
    addresses: tuple[str, ...] = ()  # textual IPv4 and IPv6 addresses, the host's order


Resolve = Callable[[str], Lookup]

_FAMILY = {TYPE_A: socket.AF_INET, TYPE_AAAA: socket.AF_INET6}


def answers(qtype: int) -> bool:
    """Whether the host's resolver answers this type (the relay sends others to QEMU's DNS)."""
    return qtype in _FAMILY


def answer(query: Query, resolve: Resolve) -> bytes:
    if query.qclass != CLASS_IN or not answers(query.qtype):
        return response(query, NOTIMP)
    name = query.name.rstrip(".")
    if not _plausible(name):
        return response(query, NXDOMAIN, ttl=TTL)
    found = resolve(name)
    if found.outcome is Outcome.NO_NAME:
        return response(query, NXDOMAIN)
    if found.outcome is Outcome.FAILED:
        return response(query, SERVFAIL)
    return response(query, NOERROR, _rdatas(found.addresses, _FAMILY[query.qtype]), TTL)


def _rdatas(addresses: Sequence[str], family: int) -> list[bytes]:
    out: list[bytes] = []
    for text in addresses:
        try:
            packed = socket.inet_pton(family, text.split("%", 1)[0])  # no IPv6 zone
        except OSError:
            continue  # the other family
        if packed not in out:
            out.append(packed)
    return out[:MAX_RECORDS]


def _plausible(name: str) -> bool:
    """A name worth the host's resolver: printable ASCII labels of legal lengths. Anything
    else (a NUL in a label, an empty name) would mean something else to getaddrinfo."""
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    return all(0 < len(label) <= 63 and label.isascii() and label.isprintable() for label in labels)
