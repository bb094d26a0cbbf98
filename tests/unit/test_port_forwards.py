"""Published and manual port forwards as values: Docker's JSON in, host listeners out."""

from __future__ import annotations

from typing import Any

import pytest

from pyd.errors import UsageError
from pyd.ports.forwards import (
    Conflict,
    Forward,
    bindings_from_containers,
    describe,
    format_port_spec,
    forwardable,
    guest_address,
    host_address,
    merge,
    overlaps,
    parse_port_spec,
    reconcile,
    removal_matcher,
    unforwarded,
)

WEB_ID = "abc123def456" + "0" * 52
WEB = "docker:abc123def456/web"
API = "docker:fedcba987654/api"


def _container(ports: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One item of `GET /containers/json`, as Engine API 1.45 returns it."""
    item: dict[str, Any] = {
        "Id": WEB_ID,
        "Names": ["/web"],
        "Image": "nginx",
        "State": "running",
        "Status": "Up 2 minutes",
        "Ports": ports,
    }
    item.update(extra)
    return item


def fwd(
    host_ip: str,
    host_port: int,
    guest_port: int | None = None,
    proto: str = "tcp",
    origin: str = WEB,
    guest_ip: str = "127.0.0.1",
) -> Forward:
    return Forward(
        host_ip, host_port, host_port if guest_port is None else guest_port, proto, origin, guest_ip
    )


# --- Forward --------------------------------------------------------------------------------


def test_key_identifies_the_listener_not_its_target() -> None:
    a = fwd("0.0.0.0", 8080, 8080, origin=WEB)
    b = fwd("0.0.0.0", 8080, 9090, origin="manual")
    assert a.key == b.key == ("tcp", "0.0.0.0", 8080)
    assert a.key != fwd("0.0.0.0", 8080, proto="udp").key
    assert a.key != fwd("127.0.0.1", 8080).key


def test_forward_is_an_immutable_value() -> None:
    f = fwd("127.0.0.1", 80)
    with pytest.raises(AttributeError):
        f.host_port = 81  # type: ignore[misc]
    assert {f, fwd("127.0.0.1", 80)} == {f}


# --- host and guest addresses ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "docker", "localhost"),
    [
        ("", "0.0.0.0", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0", "127.0.0.1"),
        ("::", "::", "::1"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2", "127.0.0.2"),
        ("::1", "::1", "::1"),
        ("0:0:0:0:0:0:0:1", "::1", "::1"),
        # The guest's own interfaces mean nothing on the host: narrowed to loopback.
        ("192.168.122.10", "127.0.0.1", "127.0.0.1"),
        ("10.0.2.15", "127.0.0.1", "127.0.0.1"),
        ("fd00::10", "::1", "::1"),
        ("fe80::1%eth0", "::1", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ],
)
def test_host_address_follows_the_published_ip_and_policy(
    published: str, docker: str, localhost: str
) -> None:
    assert host_address(published, "docker") == docker
    assert host_address(published, "localhost") == localhost


def test_host_address_defaults_to_the_docker_policy() -> None:
    assert host_address("0.0.0.0") == "0.0.0.0"
    assert host_address("::") == "::"


def test_a_specific_guest_ip_is_never_widened_to_every_host_interface() -> None:
    assert host_address("192.168.1.5", "docker") not in ("0.0.0.0", "::", "192.168.1.5")


def test_unknown_bind_policy_is_a_usage_error_naming_the_setting() -> None:
    with pytest.raises(UsageError) as e:
        host_address("0.0.0.0", "public")
    assert e.value.exit_code == 2
    assert "ports.bind" in e.value.message
    assert "'public'" in e.value.message
    assert '"localhost"' in e.value.hint


def test_host_address_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        host_address("localhost")


@pytest.mark.parametrize(
    ("published", "dialled"),
    [
        ("", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("192.168.122.10", "192.168.122.10"),
    ],
)
def test_guest_address_dials_where_the_userland_proxy_listens(published: str, dialled: str) -> None:
    assert guest_address(published) == dialled


# --- GET /containers/json -------------------------------------------------------------------


def test_published_port_forwards_both_families_on_the_published_host_port() -> None:
    containers = [
        _container(
            [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            ]
        )
    ]
    assert bindings_from_containers(containers, "docker") == [
        fwd("0.0.0.0", 8080, 8080),
        fwd("::", 8080, 8080, guest_ip="::1"),
    ]


def test_guest_port_is_the_published_port_not_the_container_port() -> None:
    [f] = bindings_from_containers(
        [_container([{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}])],
        "docker",
    )
    assert (f.host_port, f.guest_port) == (8080, 8080)


def test_localhost_policy_keeps_wildcard_bindings_on_loopback() -> None:
    containers = [
        _container(
            [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            ]
        )
    ]
    assert [f.host_ip for f in bindings_from_containers(containers, "localhost")] == [
        "127.0.0.1",
        "::1",
    ]


def test_loopback_only_publish_stays_on_loopback_under_either_policy() -> None:
    containers = [
        _container([{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}])
    ]
    for policy in ("docker", "localhost"):
        assert bindings_from_containers(containers, policy) == [fwd("127.0.0.1", 8080)]


def test_ipv6_loopback_publish_dials_the_guests_ipv6_loopback() -> None:
    containers = [_container([{"IP": "::1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}])]
    assert bindings_from_containers(containers, "docker") == [
        fwd("::1", 8080, guest_ip="::1"),
    ]


def test_exposed_but_unpublished_ports_are_skipped() -> None:
    containers = [
        _container(
            [
                {"PrivatePort": 5432, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
            ]
        )
    ]
    assert bindings_from_containers(containers, "docker") == [fwd("0.0.0.0", 8080)]


def test_container_without_ports_yields_nothing() -> None:
    assert bindings_from_containers([_container([]), _container(None)], "docker") == []  # type: ignore[arg-type]
    assert bindings_from_containers([], "docker") == []


def test_origin_names_the_short_id_and_the_name_without_slash() -> None:
    containers = [
        _container([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}])
    ]
    [f] = bindings_from_containers(containers, "docker")
    assert f.origin == "docker:abc123def456/web"


def test_origin_prefers_the_containers_own_name_over_link_aliases() -> None:
    containers = [
        _container(
            [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
            Names=["/app/db", "/web"],
        )
    ]
    [f] = bindings_from_containers(containers, "docker")
    assert f.origin == WEB


def test_origin_without_a_name_is_the_short_id() -> None:
    containers = [
        _container(
            [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}], Names=[]
        )
    ]
    assert bindings_from_containers(containers, "docker")[0].origin == "docker:abc123def456"


def test_udp_bindings_are_kept_so_they_can_be_reported() -> None:
    containers = [
        _container(
            [
                {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "udp"},
                {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 5353, "Type": "tcp"},
            ]
        )
    ]
    found = bindings_from_containers(containers, "docker")
    assert fwd("0.0.0.0", 5353, proto="udp") in found
    assert fwd("0.0.0.0", 5353, proto="tcp") in found


def test_a_published_range_yields_one_forward_per_port() -> None:
    # `docker run -p 8000-8002:80-82`: the engine lists each port of the range separately.
    containers = [
        _container(
            [
                {"IP": "0.0.0.0", "PrivatePort": 80 + i, "PublicPort": 8000 + i, "Type": "tcp"}
                for i in range(3)
            ]
        )
    ]
    assert bindings_from_containers(containers, "docker") == [
        fwd("0.0.0.0", 8000),
        fwd("0.0.0.0", 8001),
        fwd("0.0.0.0", 8002),
    ]


def test_publish_all_random_high_ports_are_forwarded_as_published() -> None:
    # `docker run -P`: the engine picks ephemeral host ports; they are forwarded as they are.
    containers = [
        _container(
            [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 443, "PublicPort": 32769, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 443, "PublicPort": 32769, "Type": "tcp"},
            ]
        )
    ]
    found = bindings_from_containers(containers, "docker")
    assert [(f.host_ip, f.host_port, f.guest_port) for f in found] == [
        ("0.0.0.0", 32768, 32768),
        ("0.0.0.0", 32769, 32769),
        ("::", 32768, 32768),
        ("::", 32769, 32769),
    ]


def test_duplicate_port_entries_yield_one_forward() -> None:
    entry = {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}
    assert bindings_from_containers([_container([entry, dict(entry)])], "docker") == [
        fwd("0.0.0.0", 8080)
    ]


def test_containers_that_hold_no_ports_are_skipped() -> None:
    entry = {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}
    containers = [
        _container([entry], State="exited"),
        _container([entry], State="created"),
        _container([dict(entry, PublicPort=9090)], State="paused"),
    ]
    assert bindings_from_containers(containers, "docker") == [fwd("0.0.0.0", 9090)]


def test_containers_are_listed_in_a_stable_order() -> None:
    web = _container([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 9000, "Type": "tcp"}])
    api = _container(
        [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8000, "Type": "tcp"}],
        Id="fedcba987654" + "1" * 52,
        Names=["/api"],
    )
    assert bindings_from_containers([web, api], "docker") == bindings_from_containers(
        [api, web], "docker"
    )
    assert [f.origin for f in bindings_from_containers([web, api], "docker")] == [API, WEB]


def test_out_of_range_published_port_is_refused() -> None:
    containers = [
        _container([{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 70000, "Type": "tcp"}])
    ]
    with pytest.raises(ValueError, match="70000"):
        bindings_from_containers(containers, "docker")


def test_bindings_refuse_an_unknown_policy() -> None:
    with pytest.raises(UsageError):
        bindings_from_containers([], "everywhere")


# --- pyd port add specs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "host_ip", "host_port", "guest_port"),
    [
        ("8080:80", "127.0.0.1", 8080, 80),
        ("8080:80/tcp", "127.0.0.1", 8080, 80),
        ("8080:80/TCP", "127.0.0.1", 8080, 80),
        ("  8080:80 ", "127.0.0.1", 8080, 80),
        ("0.0.0.0:8080:80", "0.0.0.0", 8080, 80),
        ("192.168.1.5:8080:80", "192.168.1.5", 8080, 80),
        ("[::1]:8080:80", "::1", 8080, 80),
        ("[::]:8080:80/tcp", "::", 8080, 80),
        ("[0:0:0:0:0:0:0:1]:1:65535", "::1", 1, 65535),
        ("65535:1", "127.0.0.1", 65535, 1),
    ],
)
def test_port_spec_parses(spec: str, host_ip: str, host_port: int, guest_port: int) -> None:
    assert parse_port_spec(spec) == Forward(
        host_ip, host_port, guest_port, "tcp", "manual", "127.0.0.1"
    )


def test_manual_forward_defaults_to_host_loopback() -> None:
    assert parse_port_spec("3000:3000").host_ip == "127.0.0.1"


@pytest.mark.parametrize("spec", ["9000:9000/sctp", "127.0.0.1:9000:9000/SCTP"])
def test_an_sctp_spec_is_refused_saying_why(spec: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_port_spec(spec)
    assert e.value.exit_code == 2
    assert "SCTP cannot be forwarded" in e.value.message
    assert "TCP and UDP" in e.value.hint


@pytest.mark.parametrize(
    ("spec", "stored"),
    [
        ("5353:53/udp", "127.0.0.1:5353:53/udp"),
        ("0.0.0.0:5353:53/UDP", "0.0.0.0:5353:53/udp"),
        ("[::1]:5353:53/udp", "[::1]:5353:53/udp"),
        ("8080:80/tcp", "127.0.0.1:8080:80"),
    ],
)
def test_a_manual_forward_is_tcp_or_udp_and_reads_back_as_stored(spec: str, stored: str) -> None:
    f = parse_port_spec(spec)
    assert f.proto == ("udp" if "/u" in spec.lower() else "tcp") and f.origin == "manual"
    assert format_port_spec(f) == stored and parse_port_spec(stored) == f


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(UsageError, match="unknown protocol 'icmp'"):
        parse_port_spec("8080:80/icmp")


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "both a host port and a guest port"),
        ("8080", "both a host port and a guest port"),
        ("0:80", "outside 1-65535"),
        ("8080:65536", "outside 1-65535"),
        ("8080:http", "'http' is not a port number"),
        ("+80:80", "is not a port number"),
        ("8080:80:", "is not an IP address"),
        (":8080:80", "is not an IP address"),
        ("localhost:8080:80", "'localhost' is not an IP address"),
        ("300.1.1.1:8080:80", "is not an IP address"),
        ("::1:8080:80", "IPv6 address must be in brackets"),
        ("[::1:8080:80", "expected [IPV6]:HOSTPORT:GUESTPORT"),
        ("[::1]8080:80", "expected [IPV6]:HOSTPORT:GUESTPORT"),
        ("[::1]:8080", "expected [IPV6]:HOSTPORT:GUESTPORT"),
        ("[127.0.0.1]:8080:80", "only IPv6 addresses go in brackets"),
        ("8080:80/http", "unknown protocol 'http'"),
        ("8000-8002:80-82", "ranges are not supported"),
    ],
)
def test_malformed_spec_is_a_usage_error_with_an_example(spec: str, problem: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_port_spec(spec)
    assert e.value.exit_code == 2
    assert problem in e.value.message
    assert repr(spec) in e.value.message
    assert "e.g." in e.value.hint


@pytest.mark.parametrize(
    ("forward", "spec"),
    [
        (fwd("127.0.0.1", 8080, 80, origin="manual"), "127.0.0.1:8080:80"),
        (fwd("0.0.0.0", 8080, 80, origin="manual"), "0.0.0.0:8080:80"),
        (fwd("::1", 8080, 80, origin="manual"), "[::1]:8080:80"),
        (fwd("::", 1, 65535, origin="manual"), "[::]:1:65535"),
    ],
)
def test_format_port_spec_round_trips(forward: Forward, spec: str) -> None:
    assert format_port_spec(forward) == spec
    assert parse_port_spec(spec) == forward


@pytest.mark.parametrize("spec", ["8080:80", "[::1]:8080:80/tcp", "0.0.0.0:1:2"])
def test_parsed_specs_survive_the_config_file(spec: str) -> None:
    f = parse_port_spec(spec)
    assert parse_port_spec(format_port_spec(f)) == f


def test_format_port_spec_names_a_non_tcp_protocol() -> None:
    assert format_port_spec(fwd("0.0.0.0", 5353, 5353, proto="udp")) == "0.0.0.0:5353:5353/udp"


# --- UDP and describe -----------------------------------------------------------------------


def test_tcp_and_udp_are_forwardable_and_sctp_is_not() -> None:
    tcp = fwd("0.0.0.0", 53)
    udp = fwd("0.0.0.0", 53, proto="udp")
    sctp = fwd("0.0.0.0", 9, proto="sctp")
    assert unforwarded([tcp, udp, sctp, udp]) == [sctp]
    assert forwardable([tcp, udp, sctp, tcp]) == [tcp, udp]
    assert unforwarded([tcp, udp]) == []


@pytest.mark.parametrize(
    ("forward", "text"),
    [
        (
            fwd("0.0.0.0", 8080, origin="docker:abc123/web"),
            "0.0.0.0:8080 -> guest:8080/tcp (docker:abc123/web)",
        ),
        (fwd("::", 8080, guest_ip="::1"), f"[::]:8080 -> guest:[::1]:8080/tcp ({WEB})"),
        (fwd("127.0.0.1", 3000, 80, origin="manual"), "127.0.0.1:3000 -> guest:80/tcp (manual)"),
        (fwd("0.0.0.0", 53, proto="udp"), f"0.0.0.0:53 -> guest:53/udp ({WEB})"),
        (
            fwd("127.0.0.1", 8080, guest_ip="192.168.122.10"),
            f"127.0.0.1:8080 -> guest:192.168.122.10:8080/tcp ({WEB})",
        ),
    ],
)
def test_describe_reads_as_one_line(forward: Forward, text: str) -> None:
    assert describe(forward) == text


# --- overlaps and merge ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "clash"),
    [
        (fwd("0.0.0.0", 8080), fwd("0.0.0.0", 8080, 80, origin="manual"), True),
        (fwd("0.0.0.0", 8080), fwd("127.0.0.1", 8080), True),
        (fwd("127.0.0.1", 8080), fwd("0.0.0.0", 8080), True),
        (fwd("::", 8080), fwd("::1", 8080), True),
        (fwd("::", 8080), fwd("0.0.0.0", 8080), False),  # IPV6_V6ONLY
        (fwd("::", 8080), fwd("127.0.0.1", 8080), False),
        (fwd("::1", 8080), fwd("127.0.0.1", 8080), False),
        (fwd("127.0.0.1", 8080), fwd("127.0.0.2", 8080), False),
        (fwd("0.0.0.0", 8080), fwd("0.0.0.0", 8081), False),
        (fwd("0.0.0.0", 53), fwd("0.0.0.0", 53, proto="udp"), False),
    ],
)
def test_overlaps_follows_linux_bind_rules(a: Forward, b: Forward, clash: bool) -> None:
    assert overlaps(a, b) is clash
    assert overlaps(b, a) is clash


def test_merge_keeps_everything_when_nothing_clashes() -> None:
    docker = [fwd("0.0.0.0", 8080), fwd("::", 8080, guest_ip="::1")]
    manual = [fwd("127.0.0.1", 3000, 80, origin="manual")]
    kept, conflicts = merge(docker, manual)
    assert kept == sorted(docker + manual)
    assert conflicts == []


def test_manual_forward_wins_over_docker_on_the_same_address() -> None:
    mine = fwd("127.0.0.1", 8080, 80, origin="manual")
    theirs = fwd("127.0.0.1", 8080)
    kept, conflicts = merge([theirs], [mine])
    assert kept == [mine]
    assert [c.forward for c in conflicts] == [theirs]
    assert "127.0.0.1:8080/tcp is taken by 127.0.0.1:8080 -> guest:80/tcp (manual)" in (
        conflicts[0].reason
    )


def test_wildcard_and_specific_address_on_one_port_clash() -> None:
    mine = fwd("127.0.0.1", 8080, 80, origin="manual")
    theirs = fwd("0.0.0.0", 8080)
    kept, conflicts = merge([theirs], [mine])
    assert kept == [mine]
    assert conflicts[0].forward == theirs
    assert "wildcard and a specific address" in conflicts[0].reason


def test_losing_ipv4_binding_takes_its_ipv6_twin_with_it() -> None:
    # Otherwise localhost:8080 reaches the manual target over IPv4 and the container over IPv6.
    mine = fwd("127.0.0.1", 8080, 80, origin="manual")
    v4, v6 = fwd("0.0.0.0", 8080), fwd("::", 8080, guest_ip="::1")
    kept, conflicts = merge([v4, v6], [mine])
    assert kept == [mine]
    assert sorted(c.forward for c in conflicts) == [v4, v6]
    v6_reason = next(c.reason for c in conflicts if c.forward == v6)
    assert "its twin 0.0.0.0:8080/tcp is taken by 127.0.0.1:8080 -> guest:80/tcp (manual)" in (
        v6_reason
    )
    assert "all its addresses or on none" in v6_reason


def test_a_left_out_group_frees_no_port_it_never_held() -> None:
    # The container losing to a manual forward does not block another container's IPv6 port.
    mine = fwd("127.0.0.1", 8080, 80, origin="manual")
    web_v4, web_v6 = fwd("0.0.0.0", 8080), fwd("::", 8080, guest_ip="::1")
    api_v6 = fwd("::1", 8080, origin=API, guest_ip="fd00::10")
    kept, conflicts = merge([web_v4, web_v6, api_v6], [mine])
    assert kept == [mine, api_v6]
    assert sorted(c.forward for c in conflicts) == [web_v4, web_v6]


def test_between_containers_the_first_origin_wins_whatever_the_input_order() -> None:
    # Two guest interfaces both narrowed to host loopback land on one host address.
    web = fwd("127.0.0.1", 8080, guest_ip="192.168.122.10")
    api = fwd("127.0.0.1", 8080, origin=API, guest_ip="10.0.2.15")
    assert merge([web, api], []) == merge([api, web], [])
    kept, conflicts = merge([web, api], [])
    assert kept == [web]  # "docker:abc123…" sorts before "docker:fedcba…"
    assert conflicts == [Conflict(api, conflicts[0].reason)]
    assert WEB in conflicts[0].reason


def test_clashing_manual_forwards_keep_the_first_in_order() -> None:
    a = fwd("0.0.0.0", 8080, 80, origin="manual")
    b = fwd("127.0.0.1", 8080, 81, origin="manual")
    kept, conflicts = merge([], [b, a])
    assert kept == [a]
    assert [c.forward for c in conflicts] == [b]


def test_clash_within_one_container_leaves_out_only_the_second_binding() -> None:
    first = fwd("127.0.0.1", 8080, guest_ip="10.0.2.15")
    second = fwd("127.0.0.1", 8080, guest_ip="192.168.122.10")
    twin = fwd("::1", 8080, guest_ip="::1")
    kept, conflicts = merge([first, second, twin], [])
    assert kept == [first, twin]
    assert [c.forward for c in conflicts] == [second]


def test_merge_drops_exact_duplicates_without_reporting_them() -> None:
    f = fwd("0.0.0.0", 8080)
    m = fwd("127.0.0.1", 3000, 80, origin="manual")
    assert merge([f, f], [m, m]) == (sorted([f, m]), [])


def test_udp_and_tcp_on_one_port_do_not_clash() -> None:
    tcp, udp = fwd("0.0.0.0", 53), fwd("0.0.0.0", 53, proto="udp")
    kept, conflicts = merge([tcp, udp], [])
    assert kept == [tcp, udp]
    assert conflicts == []


# --- reconcile ------------------------------------------------------------------------------


def test_reconcile_opens_new_and_closes_gone_listeners() -> None:
    stays, goes, comes = fwd("0.0.0.0", 80), fwd("0.0.0.0", 81), fwd("0.0.0.0", 82)
    assert reconcile([stays, goes], [comes, stays]) == ([comes], [goes])


def test_reconcile_with_nothing_to_do_is_empty() -> None:
    fs = [fwd("0.0.0.0", 80), fwd("::", 80, guest_ip="::1")]
    assert reconcile(fs, list(reversed(fs))) == ([], [])
    assert reconcile([], []) == ([], [])


def test_container_stopping_closes_its_listeners() -> None:
    fs = [fwd("0.0.0.0", 80), fwd("::", 80, guest_ip="::1")]
    assert reconcile(fs, []) == ([], sorted(fs))


def test_changed_target_on_the_same_listener_is_closed_and_reopened() -> None:
    old = fwd("127.0.0.1", 8080, 80, origin="manual")
    new_port = fwd("127.0.0.1", 8080, 81, origin="manual")
    new_origin = fwd("127.0.0.1", 8080, 80, origin="docker:111111111111/web")
    new_guest_ip = fwd("127.0.0.1", 8080, 80, origin="manual", guest_ip="::1")
    for new in (new_port, new_origin, new_guest_ip):
        assert reconcile([old], [new]) == ([new], [old])


def test_reconcile_output_is_sorted_whatever_the_input_order() -> None:
    desired = [fwd("::", 90), fwd("0.0.0.0", 90), fwd("0.0.0.0", 10), fwd("127.0.0.1", 50)]
    to_open, to_close = reconcile([], desired)
    assert to_open == sorted(desired)
    assert to_open[0] == fwd("0.0.0.0", 10)
    assert to_close == []
    assert reconcile(desired, []) == ([], sorted(desired))


def test_reconcile_refuses_two_forwards_on_one_listener() -> None:
    a, b = fwd("0.0.0.0", 80, 80), fwd("0.0.0.0", 80, 81)
    with pytest.raises(ValueError, match="share a listener"):
        reconcile([], [a, b])
    with pytest.raises(ValueError, match="share a listener"):
        reconcile([a, b], [])


# --- what `pyd port rm` names --------------------------------------------------------------

_HELD = [
    parse_port_spec("8080:80"),
    parse_port_spec("0.0.0.0:8080:81"),
    parse_port_spec("[::1]:8080:80"),
    parse_port_spec("9000:9000"),
]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("8080", ["127.0.0.1:8080:80", "0.0.0.0:8080:81", "[::1]:8080:80"]),
        ("127.0.0.1:8080", ["127.0.0.1:8080:80"]),
        ("[::1]:8080", ["[::1]:8080:80"]),
        ("[0:0:0:0:0:0:0:1]:8080", ["[::1]:8080:80"]),
        # A spec without an address matches whatever address the forward listens on.
        ("8080:80", ["127.0.0.1:8080:80", "[::1]:8080:80"]),
        ("0.0.0.0:8080:81", ["0.0.0.0:8080:81"]),
        ("127.0.0.1:8080:81", []),
        (" 9000 ", ["127.0.0.1:9000:9000"]),
    ],
)
def test_port_rm_names_forwards_by_spec_or_host_side(text: str, named: list[str]) -> None:
    matches = removal_matcher(text)
    assert [format_port_spec(f) for f in _HELD if matches(f)] == named


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("70000", "'70000': host port 70000 is outside 1-65535"),
        ("999.1.1.1:8080", "'999.1.1.1:8080': '999.1.1.1' is not an IP address"),
        ("[127.0.0.1]:8080", "'[127.0.0.1]:8080': only IPv6 addresses go in brackets"),
        ("web", "invalid port forward 'web'"),
    ],
)
def test_port_rm_refuses_what_names_no_forward_saying_how_to(text: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        removal_matcher(text)
    assert e.value.message.startswith(message)
    assert "127.0.0.1:8080:80" in e.value.hint and "[::1]:8080" in e.value.hint


# --- end to end over the values -------------------------------------------------------------


def test_docker_list_to_listeners_carries_udp_and_reports_conflicts() -> None:
    containers = [
        _container(
            [
                {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
                {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 53, "Type": "udp"},
            ]
        )
    ]
    manual = [parse_port_spec("8080:3000")]
    kept, conflicts = merge(bindings_from_containers(containers, "docker"), manual)
    assert [describe(f) for f in forwardable(kept)] == [
        f"0.0.0.0:53 -> guest:53/udp ({WEB})",
        "127.0.0.1:8080 -> guest:3000/tcp (manual)",
    ]
    assert unforwarded(kept) == []
    assert len(conflicts) == 2
    to_open, to_close = reconcile([], forwardable(kept))
    assert to_open == sorted([*manual, fwd("0.0.0.0", 53, proto="udp")])
    assert to_close == []
