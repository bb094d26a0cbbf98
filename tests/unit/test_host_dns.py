"""The host's resolver in the guest, its pure parts: DNS messages, answers from a lookup's
outcome, getaddrinfo's errors per OS, and the network.host_dns setting."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from pyd.config.settings import with_value
from pyd.dns.answer import MAX_RECORDS, Lookup, Outcome, Resolve, answer
from pyd.dns.coalesce import Coalesced
from pyd.dns.lookup import host_lookup, outcome_of_error
from pyd.dns.wire import (
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    SERVFAIL,
    TYPE_AAAA,
    WireError,
    error_response,
    parse_query,
)
from pyd.errors import UsageError
from tests.unit.test_config import SHIPPED
from tests.unit.test_dns_relay import parse, query


def resolver(found: Lookup) -> tuple[list[str], Resolve]:
    asked: list[str] = []

    def resolve(name: str) -> Lookup:
        asked.append(name)
        return found

    return asked, resolve


def test_a_query_is_read_with_its_name_type_and_question() -> None:
    q = parse_query(query("Only.On.Host", TYPE_AAAA, ident=77) + b"\0\0)\x10\0")  # + EDNS
    assert (q.ident, q.name, q.qtype, q.qclass) == (77, "Only.On.Host", TYPE_AAAA, 1)
    assert q.question == query("Only.On.Host", TYPE_AAAA)[12:]


@pytest.mark.parametrize(
    "message",
    [
        b"\0" * 11,  # no header
        struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\0\0\1\0\1",  # a response
        struct.pack("!HHHHHH", 1, 0x0100, 2, 0, 0, 0) + b"\0\0\1\0\1" * 2,  # two questions
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",  # a pointer
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x05ab",  # a label cut short
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\0\0",  # no class
    ],
)
def test_messages_that_are_not_a_plain_query_are_refused(message: bytes) -> None:
    with pytest.raises(WireError):
        parse_query(message)


def test_a_refused_message_gets_formerr_with_its_id() -> None:
    reply = error_response(struct.pack("!HHHHHH", 9, 0x0100, 2, 0, 0, 0), FORMERR)
    assert reply is not None and parse(reply + b"\0\0\0\0\0")[:2] == (9, FORMERR)
    assert error_response(b"\0\1", FORMERR) is None


def test_a_and_aaaa_get_the_hosts_addresses_of_their_own_family() -> None:
    found = Lookup(Outcome.FOUND, ("192.0.2.1", "2001:db8::1", "192.0.2.2", "fe80::1%eth0"))
    asked, resolve = resolver(found)
    ident, rcode, rdatas = parse(answer(parse_query(query("db.corp", ident=5)), resolve))
    assert (ident, rcode) == (5, NOERROR)
    assert rdatas == [socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")]
    six = parse(answer(parse_query(query("db.corp.", TYPE_AAAA)), resolve))[2]
    assert six == [socket.inet_pton(socket.AF_INET6, a) for a in ("2001:db8::1", "fe80::1")]
    assert asked == ["db.corp", "db.corp"]


def test_a_name_with_only_ipv4_answers_aaaa_with_no_records_not_nxdomain() -> None:
    """musl takes an NXDOMAIN for AAAA as the whole name's absence."""
    _asked, resolve = resolver(Lookup(Outcome.FOUND, ("192.0.2.1",)))
    assert parse(answer(parse_query(query("v4.only", TYPE_AAAA)), resolve))[1:] == (NOERROR, [])


def test_missing_names_are_nxdomain_and_failures_servfail() -> None:
    _asked, gone = resolver(Lookup(Outcome.NO_NAME))
    assert parse(answer(parse_query(query("no.such")), gone))[1] == NXDOMAIN
    _asked, failed = resolver(Lookup(Outcome.FAILED))
    assert parse(answer(parse_query(query("vpn.down")), failed))[1] == SERVFAIL


def test_other_types_and_odd_names_never_reach_the_hosts_resolver() -> None:
    asked, resolve = resolver(Lookup(Outcome.FOUND, ("192.0.2.1",)))
    assert parse(answer(parse_query(query("mail.corp", 15)), resolve))[1] == NOTIMP
    odd = query("x").replace(b"\x01x", b"\x03a\0b")  # a NUL inside a label
    assert parse(answer(parse_query(odd), resolve))[1] == NXDOMAIN
    assert parse(answer(parse_query(query("")), resolve))[1] == NXDOMAIN  # the relay's probe
    assert asked == []


def test_many_addresses_are_capped_to_fit_a_udp_answer() -> None:
    many = tuple(f"192.0.2.{i}" for i in range(40))
    _asked, resolve = resolver(Lookup(Outcome.FOUND, many))
    reply = answer(parse_query(query("many." + "x" * 60 + ".example")), resolve)
    assert len(parse(reply)[2]) == MAX_RECORDS and len(reply) <= 512


@pytest.mark.parametrize(
    ("platform", "code", "outcome"),
    [
        ("linux", -2, Outcome.NO_NAME),  # EAI_NONAME
        ("linux", -5, Outcome.FOUND),  # EAI_NODATA: the name exists
        ("linux", -3, Outcome.FAILED),  # EAI_AGAIN
        ("darwin", 8, Outcome.NO_NAME),
        ("darwin", 2, Outcome.FAILED),
        ("win32", 11001, Outcome.NO_NAME),  # WSAHOST_NOT_FOUND
        ("win32", 11004, Outcome.FOUND),  # WSANO_DATA
        ("win32", 11002, Outcome.FAILED),  # WSATRY_AGAIN
        ("freebsd14", -2, Outcome.NO_NAME),
    ],
)
def test_getaddrinfo_errors_read_per_os(platform: str, code: int, outcome: Outcome) -> None:
    assert outcome_of_error(code, platform) is outcome


def test_the_hosts_resolver_reads_its_hosts_file() -> None:
    assert "127.0.0.1" in host_lookup("localhost", "linux").addresses
    assert host_lookup("pyd-no-such-name.invalid", "linux").outcome is Outcome.NO_NAME


def test_host_dns_is_on_by_default_and_set_with_true_or_false() -> None:
    assert SHIPPED.host_dns is True
    off = with_value(SHIPPED, "network.host_dns", "false")
    assert off.host_dns is False
    with pytest.raises(UsageError) as e:
        with_value(SHIPPED, "network.host_dns", "off")
    assert e.value.hint and "resolver" in e.value.hint


def test_queries_of_a_name_during_its_lookup_share_it_and_later_ones_look_again() -> None:
    """A and AAAA arrive together: one getaddrinfo, not two; nothing is kept after."""
    calls: list[str] = []
    release = threading.Event()

    def slow(name: str) -> Lookup:
        calls.append(name)
        release.wait(5)
        return Lookup(Outcome.FOUND, ("192.0.2.1",))

    resolve = Coalesced(slow)
    got: list[Lookup] = []
    threads = [threading.Thread(target=lambda: got.append(resolve("Db.Corp"))) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    release.set()
    for t in threads:
        t.join(5)
    assert calls == ["Db.Corp"] and got == [Lookup(Outcome.FOUND, ("192.0.2.1",))] * 2
    resolve("db.corp")
    assert len(calls) == 2
