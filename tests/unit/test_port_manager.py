"""PortManager through its seams: host listeners are fakes that record what the manager asks
of them, so reconciling Docker's list, config.toml and failed binds takes milliseconds."""

from __future__ import annotations

from typing import Any

import paramiko
import pytest

from pyd.host.threads import Deadline
from pyd.ports.forwards import Forward, PortState, PortStatus
from pyd.ports.listener import PortInUseError
from pyd.ports.manager import OpenTcp, PortManager
from pyd.ports.udp_listener import OpenRelay

WEB_ID = "0123456789ab" + "0" * 52


class FakeListener:
    """A host listener that binds nothing; `taken` holds the host addresses "in use"."""

    def __init__(self, host: Host, forward: Forward) -> None:
        self.host = host
        self.forward = forward
        self.started = False
        self.closed = False
        self.joined = False

    def start(self) -> None:
        address = (self.forward.host_ip, self.forward.host_port)
        if address in self.host.taken:
            raise PortInUseError(f"cannot listen on {address}: in use by nginx", address, "nginx")
        self.started = True
        self.host.log.append(f"start {self.forward.host_port}->{self.forward.guest_port}")

    def close(self) -> None:
        self.closed = True
        self.host.log.append(f"close {self.forward.host_port}->{self.forward.guest_port}")

    def join(self, deadline: Deadline) -> bool:
        assert self.closed
        self.joined = True
        self.host.log.append(f"join {self.forward.host_port}->{self.forward.guest_port}")
        return True


class Host:
    """The listeners the manager made, in order, and the addresses other programs hold."""

    def __init__(self) -> None:
        self.made: list[FakeListener] = []
        self.taken: set[tuple[str, int]] = set()
        self.log: list[str] = []  # "start|close|join HOSTPORT->GUESTPORT", in order

    def listener(self, forward: Forward, open_tcp: OpenTcp) -> FakeListener:
        made = FakeListener(self, forward)
        self.made.append(made)
        return made

    def udp_listener(self, forward: Forward, open_relay: OpenRelay) -> FakeListener:
        made = FakeListener(self, forward)
        self.made.append(made)
        return made

    def listening(self) -> list[str]:
        """The live listeners, as "host_ip:host_port->guest_port"."""
        return sorted(
            f"{f.host_ip}:{f.host_port}->{f.guest_port}"
            for f in (m.forward for m in self.made if m.started and not m.closed)
        )


def _no_channel(forward: Forward, origin: tuple[str, int]) -> paramiko.Channel:
    raise AssertionError("no connection is made in these tests")


class Reports:
    def __init__(self) -> None:
        self.all: list[tuple[PortStatus, ...]] = []

    def __call__(self, report: tuple[PortStatus, ...]) -> None:
        self.all.append(report)

    def states(self) -> list[tuple[str, str, str]]:
        """The last report as (host, origin, state)."""
        return [(s.host, s.origin, s.state) for s in self.all[-1]]


def _container(*ports: tuple[str, int, str]) -> dict[str, Any]:
    return {
        "Id": WEB_ID,
        "Names": ["/web"],
        "State": "running",
        "Ports": [
            {"IP": ip, "PrivatePort": 80, "PublicPort": port, "Type": proto}
            for ip, port, proto in ports
        ],
    }


WEB = "docker:0123456789ab/web"


@pytest.fixture
def host() -> Host:
    return Host()


@pytest.fixture
def reports() -> Reports:
    return Reports()


def _no_relay(forward: Forward) -> paramiko.Channel:
    raise AssertionError("no relay is started in these tests")


def _manager(host: Host, reports: Reports, manual: tuple[str, ...] = ()) -> PortManager:
    ports = PortManager(
        _no_channel,
        "docker",
        manual,
        reports,
        listener=host.listener,
        open_udp=_no_relay,
        udp_listener=host.udp_listener,
    )
    ports.start()
    return ports


def test_manual_forwards_listen_once_the_config_is_applied(host: Host, reports: Reports) -> None:
    _manager(host, reports, ("8080:80", "0.0.0.0:9000:90"))
    assert host.listening() == ["0.0.0.0:9000->90", "127.0.0.1:8080->80"]
    assert reports.states() == [
        ("0.0.0.0:9000", "manual", PortState.LISTENING),
        ("127.0.0.1:8080", "manual", PortState.LISTENING),
    ]


def test_published_ports_follow_the_containers(host: Host, reports: Reports) -> None:
    ports = _manager(host, reports)
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"))])
    assert host.listening() == ["0.0.0.0:8080->8080"]
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"), ("0.0.0.0", 8443, "tcp"))])
    assert host.listening() == ["0.0.0.0:8080->8080", "0.0.0.0:8443->8443"]
    assert len(host.made) == 2  # the one that stays is not reopened
    ports.set_containers([])
    assert host.listening() == []
    assert all(m.closed for m in host.made)
    assert reports.all[-1] == ()


def test_a_changed_bind_policy_moves_the_listeners(host: Host, reports: Reports) -> None:
    ports = _manager(host, reports)
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"))])
    ports.set_config("localhost", ())
    assert host.listening() == ["127.0.0.1:8080->8080"]


def test_a_manual_forward_wins_a_clash_and_the_loser_is_listed(
    host: Host, reports: Reports
) -> None:
    ports = _manager(host, reports, ("0.0.0.0:8080:3000",))
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"))])
    assert host.listening() == ["0.0.0.0:8080->3000"]
    assert reports.states() == [
        ("0.0.0.0:8080", WEB, PortState.CONFLICT),
        ("0.0.0.0:8080", "manual", PortState.LISTENING),
    ]
    assert reports.all[-1][0].detail == (
        "host 0.0.0.0:8080/tcp is taken by 0.0.0.0:8080 -> guest:3000/tcp (manual)"
    )


def test_udp_is_listened_on_beside_tcp_on_the_same_port(host: Host, reports: Reports) -> None:
    ports = _manager(host, reports)
    ports.set_containers([_container(("0.0.0.0", 5353, "udp"), ("0.0.0.0", 5353, "tcp"))])
    assert sorted(m.forward.proto for m in host.made if m.started) == ["tcp", "udp"]
    assert [(s.proto, s.state) for s in reports.all[-1]] == [
        ("tcp", PortState.LISTENING),
        ("udp", PortState.LISTENING),
    ]


def test_a_manual_udp_forward_is_listened_on_as_a_published_one(
    host: Host, reports: Reports
) -> None:
    _manager(host, reports, manual=("127.0.0.1:5353:53/udp", "127.0.0.1:5353:53"))
    made = sorted((m.forward.proto, m.forward.guest_port) for m in host.made if m.started)
    assert made == [("tcp", 53), ("udp", 53)]
    assert [(s.proto, s.state) for s in reports.all[-1]] == [
        ("tcp", PortState.LISTENING),
        ("udp", PortState.LISTENING),
    ]


def test_sctp_is_listed_as_not_forwarded_and_never_listened_on(
    host: Host, reports: Reports
) -> None:
    ports = _manager(host, reports)
    ports.set_containers([_container(("0.0.0.0", 9000, "sctp"))])
    assert host.made == []
    [status] = reports.all[-1]
    assert status.state == PortState.NOT_FORWARDED
    assert status.detail == "SCTP is not carried"


def test_without_a_relay_udp_is_listed_as_not_forwarded(host: Host, reports: Reports) -> None:
    ports = PortManager(_no_channel, "docker", (), reports, listener=host.listener)
    ports.start()
    ports.set_containers([_container(("0.0.0.0", 5353, "udp"))])
    assert host.made == []
    [status] = reports.all[-1]
    assert (status.state, status.detail) == (PortState.NOT_FORWARDED, "no UDP relay in this agent")


def test_a_port_that_fails_to_bind_is_listed_and_retried(host: Host, reports: Reports) -> None:
    host.taken.add(("0.0.0.0", 8080))
    ports = _manager(host, reports)
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"))])
    assert host.listening() == []
    [failed] = reports.all[-1]
    assert failed.state == PortState.FAILED
    assert "in use by nginx" in failed.detail
    # Not retried at every container event, only by retry_failed (every few seconds).
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"))])
    assert len(host.made) == 1
    ports.retry_failed()
    assert len(host.made) == 2 and host.listening() == []
    host.taken.clear()
    ports.retry_failed()
    assert host.listening() == ["0.0.0.0:8080->8080"]
    assert reports.states() == [("0.0.0.0:8080", WEB, PortState.LISTENING)]


def test_the_same_report_is_not_sent_twice(host: Host, reports: Reports) -> None:
    ports = _manager(host, reports, ("8080:80",))
    ports.set_containers([])
    ports.set_config("docker", ("8080:80",))
    assert len(reports.all) == 1


def test_a_replaced_listener_lets_go_of_its_address_before_the_next_binds(
    host: Host, reports: Reports
) -> None:
    ports = _manager(host, reports)
    ports.set_containers([_container(("0.0.0.0", 8080, "tcp"))])
    ports.set_config("docker", ("0.0.0.0:8080:3000",))  # the manual forward takes the address
    assert host.log == [
        "start 8080->8080",
        "close 8080->8080",
        "join 8080->8080",
        "start 8080->3000",
    ]


def test_close_closes_every_listener_and_nothing_opens_after_it(
    host: Host, reports: Reports
) -> None:
    ports = _manager(host, reports, ("8080:80",))
    ports.set_containers([_container(("0.0.0.0", 9000, "tcp"))])
    ports.close()
    assert host.listening() == [] and len(host.made) == 2
    assert not any(m.joined for m in host.made)  # close() waits for nothing
    assert ports.join(Deadline(1))
    assert all(m.joined for m in host.made)
    # The container watch may still deliver a list while the agent stops.
    ports.set_containers([_container(("0.0.0.0", 9001, "tcp"))])
    ports.retry_failed()
    assert host.listening() == [] and len(host.made) == 2
