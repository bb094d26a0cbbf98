"""A published UDP port's flows: which host peer each flow id stands for, and when a quiet
flow is forgotten. Pure: the caller passes the time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

# A flow quiet this long is forgotten and its guest socket closed. UDP has no end of a
# conversation to watch for; 60 s outlasts the usual request/response and keepalive gaps
# (DNS retries, QUIC's and WireGuard's keepalives are 15-30 s) while a client that went away
# does not pin a guest socket for long. Docker's own UDP proxy and Linux conntrack use 30-180 s.
FLOW_IDLE = 60.0

# Flows one port holds at most: each is a socket in the guest's relay, whose process may open
# 1,024 files (the usual soft limit). Past it the least recently active flow makes room, so
# a scan or a flood of source ports cannot make the relay fail for everyone.
MAX_FLOWS = 512

Peer = tuple[str, int]


@dataclass
class _Flow:
    peer: Peer
    last: float


@dataclass
class FlowTable:
    """Flow ids by host peer and back. Ids are never reused within a table, so a late reply
    for an expired flow cannot reach the peer that took its place."""

    idle: float = FLOW_IDLE
    max_flows: int = MAX_FLOWS
    _by_peer: dict[Peer, int] = field(default_factory=dict)
    # Least recently active first, so the next to expire is always at the front.
    _flows: OrderedDict[int, _Flow] = field(default_factory=OrderedDict)
    _next: int = 1

    def flow_for(self, peer: Peer, now: float) -> tuple[int, bool]:
        """The flow id of `peer` (a datagram from it just arrived), and whether it is new."""
        flow = self._by_peer.get(peer)
        if flow is not None:
            self._touch(flow, now)
            return flow, False
        flow = self._next
        self._next += 1
        self._by_peer[peer] = flow
        self._flows[flow] = _Flow(peer, now)
        return flow, True

    def peer_of(self, flow: int, now: float) -> Peer | None:
        """Where a reply on `flow` goes (None once the flow has expired); a reply keeps the
        flow alive, as traffic from the peer does."""
        entry = self._flows.get(flow)
        if entry is None:
            return None
        self._touch(flow, now)
        return entry.peer

    def _touch(self, flow: int, now: float) -> None:
        self._flows[flow].last = now
        self._flows.move_to_end(flow)

    def expire(self, now: float) -> list[int]:
        """Forgets the flows quiet for `idle` seconds; their ids, to close in the guest."""
        gone: list[int] = []
        while self._flows:
            flow, entry = next(iter(self._flows.items()))
            if now - entry.last < self.idle:
                break
            del self._flows[flow]
            del self._by_peer[entry.peer]
            gone.append(flow)
        return gone

    def overflow(self) -> list[int]:
        """Forgets the least recently active flows beyond `max_flows`; their ids, to close."""
        gone: list[int] = []
        while len(self._flows) > self.max_flows:
            flow, entry = self._flows.popitem(last=False)
            del self._by_peer[entry.peer]
            gone.append(flow)
        return gone

    def next_expiry(self, now: float) -> float | None:
        """Seconds until the next flow may expire; None with no flows (nothing to wait for)."""
        if not self._flows:
            return None
        oldest = next(iter(self._flows.values())).last
        return max(0.0, oldest + self.idle - now)

    def clear(self) -> None:
        """Forgets every flow (the guest helper that held them is gone)."""
        self._by_peer.clear()
        self._flows.clear()

    def __len__(self) -> int:
        return len(self._flows)
