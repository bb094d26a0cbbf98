"""The agent's published-port forwards: what Docker publishes plus the manual ones, kept
in step with listeners on the host. Every binding ends up listed with its state: listening,
conflict, failed (with what holds the port) or not forwarded (SCTP), never dropped silently."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import paramiko

from pyd.errors import PydError
from pyd.host.loopback import address_text
from pyd.host.threads import Deadline
from pyd.ports.forwards import (
    Forward,
    PortState,
    PortStatus,
    bindings_from_containers,
    describe,
    forwardable,
    merge,
    parse_port_spec,
    reconcile,
    unforwarded,
)
from pyd.ports.listener import TcpPortForward
from pyd.ports.udp_listener import OpenRelay, UdpPortForward

log = logging.getLogger("pyd.ports")

OpenTcp = Callable[[Forward, tuple[str, int]], paramiko.Channel]


def port_status(f: Forward, state: PortState, detail: str = "") -> PortStatus:
    return PortStatus(
        host=address_text(f.host_ip, f.host_port),
        guest=address_text(f.guest_ip, f.guest_port),
        proto=f.proto,
        origin=f.origin,
        state=state,
        detail=detail,
    )


# How long a listener being replaced may take to let go of its address (and connections)
# before its successor binds.
REPLACE_WAIT = 10.0


class PortListener(Protocol):
    """What the manager needs of a host listener (TcpPortForward): a thread owner."""

    def start(self) -> None: ...
    def close(self) -> None: ...
    def join(self, deadline: Deadline) -> bool: ...


ListenerFactory = Callable[[Forward, OpenTcp], PortListener]
UdpListenerFactory = Callable[[Forward, OpenRelay], PortListener]


class PortManager:
    """The host listeners for the forwards wanted; a thread owner (pyd.host.threads) whose
    threads are its listeners'. start() opens the manual forwards."""

    def __init__(
        self,
        open_tcp: OpenTcp,
        bind_policy: str,
        manual: Iterable[str],
        on_change: Callable[[tuple[PortStatus, ...]], None],
        listener: ListenerFactory = TcpPortForward,
        open_udp: OpenRelay | None = None,
        udp_listener: UdpListenerFactory = UdpPortForward,
    ) -> None:
        self.open_tcp = open_tcp
        self._listener = listener
        self.open_udp = open_udp  # None: UDP is listed as not forwarded
        self._udp_listener = udp_listener
        self.bind_policy = bind_policy
        self.on_change = on_change
        self._manual = [parse_port_spec(s) for s in manual]
        self._containers: list[Mapping[str, Any]] = []
        self._open: dict[Forward, PortListener] = {}
        self._closed_ones: list[PortListener] = []  # closed by close(), joined by join()
        self._failed: dict[Forward, str] = {}
        self._lock = threading.Lock()
        self._reported: tuple[PortStatus, ...] = ()
        self._closed = False  # a list the container watch still delivers opens nothing

    def set_containers(self, containers: list[Mapping[str, Any]]) -> None:
        with self._lock:
            self._containers = containers
            self._apply()

    def set_config(self, bind_policy: str, manual: Iterable[str]) -> None:
        with self._lock:
            self.bind_policy = bind_policy
            self._manual = [parse_port_spec(s) for s in manual]
            self._failed.clear()  # a changed config is a new chance for failed binds
            self._apply()

    def retry_failed(self) -> None:
        """A port that was taken may be free now (called every few seconds)."""
        with self._lock:
            if self._failed:
                self._failed.clear()
                self._apply()

    def start(self) -> None:
        with self._lock:
            self._apply()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for fwd in self._open.values():
                fwd.close()
            self._closed_ones += self._open.values()
            self._open.clear()

    def join(self, deadline: Deadline) -> bool:
        with self._lock:
            closed = list(self._closed_ones)
        return all([fwd.join(deadline) for fwd in closed])

    def _make(self, f: Forward) -> PortListener:
        if f.proto == "udp":
            assert self.open_udp is not None  # _apply carries UDP only with a relay
            return self._udp_listener(f, self.open_udp)
        return self._listener(f, self.open_tcp)

    def _apply(self) -> None:
        if self._closed:
            return
        docker = bindings_from_containers(self._containers, self.bind_policy)
        kept, conflicts = merge(docker, self._manual)
        carried = forwardable(kept)
        if self.open_udp is None:
            carried = [f for f in carried if f.proto != "udp"]
        wanted = [f for f in carried if f not in self._failed]
        to_open, to_close = reconcile(self._open, wanted)
        replaced = [self._open.pop(f) for f in to_close]
        for fwd in replaced:
            fwd.close()
        deadline = Deadline(REPLACE_WAIT)
        for f, fwd in zip(to_close, replaced, strict=True):
            if not fwd.join(deadline):
                log.warning("%s: its threads have not ended yet", describe(f))
            log.info("closed %s", describe(f))
        for f in to_open:
            fwd = self._make(f)
            try:
                fwd.start()
            except PydError as e:
                self._failed[f] = e.message
                log.warning("cannot forward %s: %s", describe(f), e.message)
                continue
            self._open[f] = fwd
            log.info("forwarding %s", describe(f))
        statuses = [port_status(f, PortState.LISTENING) for f in self._open]
        statuses += [port_status(f, PortState.FAILED, why) for f, why in self._failed.items()]
        statuses += [port_status(c.forward, PortState.CONFLICT, c.reason) for c in conflicts]
        for f in sorted(set(unforwarded(kept)) | (set(kept) - set(carried))):
            why = "no UDP relay in this agent" if f.proto == "udp" else "SCTP is not carried"
            statuses.append(port_status(f, PortState.NOT_FORWARDED, why))
        report = tuple(sorted(statuses, key=lambda s: (s.host, s.proto, s.origin)))
        if report != self._reported:
            for s in report:
                if (
                    s.state in (PortState.CONFLICT, PortState.NOT_FORWARDED)
                    and s not in self._reported
                ):
                    log.warning("%s/%s (%s) %s: %s", s.host, s.proto, s.origin, s.state, s.detail)
            self._reported = report
            self.on_change(report)
