"""Port forwards as values: what the host should listen on, and for whom.

Docker runs in the guest, so a port published with `docker run -p` is bound inside the guest
(by dockerd's userland proxy, on the published host port). The agent mirrors each binding
with a host listener on the same port and carries its connections to the guest over SSH.
This module decides which listeners those are; it opens no sockets and reads no files.

TCP and UDP are carried (UDP framed on a channel: udp_listener); SCTP bindings are kept in
the values so that they can be reported, and `forwardable` / `unforwarded` split them off.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyd.errors import UsageError
from pyd.host.loopback import address_text

BIND_POLICIES = ("docker", "localhost")
"""`ports.bind`: "docker" binds wildcards as dockerd on Linux would; "localhost" keeps them
on the host's loopback."""
FORWARDED_PROTOS = ("tcp", "udp")
MANUAL = "manual"
MANUAL_DEFAULT_HOST_IP = "127.0.0.1"  # a forward the user adds is private unless they say so
LOOPBACK_V4 = "127.0.0.1"
LOOPBACK_V6 = "::1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PORT = re.compile(r"\d{1,5}")
_SPEC_HINT = (
    "write [HOSTIP:]HOSTPORT:GUESTPORT, e.g. 8080:80 (127.0.0.1:8080 on the host to port 80 "
    "in the guest), 0.0.0.0:8080:80 (every host interface) or [::1]:8080:80"
)


class PortState(enum.StrEnum):
    """What the agent's status file and `pyd port ls` say of a forward. The values are what
    both print, byte for byte; a forward is always listed with one, never dropped."""

    LISTENING = "listening"
    CONFLICT = "conflict"  # another forward holds the host address (detail: which)
    FAILED = "failed"  # the host listener could not be opened (detail: why, who holds it)
    NOT_FORWARDED = "not forwarded"  # SCTP: nothing carries it
    STOPPED = "stopped"  # listed from config.toml: no agent runs
    UNKNOWN = "unknown"  # the agent runs but has not reported on it yet


@dataclass(frozen=True, order=True)
class Forward:
    """One host listener and where its connections go in the guest.

    `host_ip` is the address the host listener binds ("127.0.0.1", "0.0.0.0", "::", "::1").
    `guest_port` is the port dialled inside the guest: for a Docker-published port it is the
    published *host* port, where dockerd's userland proxy listens in the guest.
    `guest_ip` is the guest address dialled: the guest's loopback for a wildcard binding,
    the published address itself for a specific one (a proxy bound to ::1 or to one of the
    guest's interfaces does not answer on 127.0.0.1).
    `origin` is "docker:<container id, 12 chars>/<name>" or "manual".
    """

    host_ip: str
    host_port: int
    guest_port: int
    proto: str
    origin: str
    guest_ip: str = LOOPBACK_V4

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies a host listener: two forwards with one key cannot both be open."""
        return (self.proto, self.host_ip, self.host_port)


@dataclass(frozen=True, order=True)
class Conflict:
    """A forward left out because another one holds (or overlaps) its host address."""

    forward: Forward
    reason: str


# --- addresses ------------------------------------------------------------------------------


def _check_policy(policy: str) -> None:
    if policy not in BIND_POLICIES:
        raise UsageError(
            f"ports.bind: unknown value {policy!r}",
            hint='use "docker" (bind published ports as Docker on Linux would) or '
            '"localhost" (keep them on this machine\'s loopback)',
        )


def _parse_ip(text: str) -> IPAddress:
    """An address from Docker's JSON; an IPv4-mapped IPv6 address counts as IPv4."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def host_address(published_ip: str, policy: str = "docker") -> str:
    """The host address to listen on for a port Docker published on `published_ip`.

    Wildcards ("" and "0.0.0.0", or "::") stay wildcards under the "docker" policy, as
    Docker on Linux binds them, and become the loopback of their family under "localhost".
    Loopback addresses are kept as they are.

    Any other specific address is one of the *guest's* (dockerd could not have bound it
    otherwise): it names nothing on the host, where binding it fails or, worse, catches an
    unrelated interface that happens to share the number. The user chose to narrow the
    binding to one interface, so widening it to 0.0.0.0 would expose the port further than
    asked; the host loopback of the same family is the narrowest listener that still makes
    the port reachable, under either policy.

    Raises ValueError when `published_ip` is not an IP address.
    """
    _check_policy(policy)
    addr = _parse_ip(published_ip or "0.0.0.0")
    if addr.is_loopback:
        return str(addr)
    if addr.is_unspecified and policy == "docker":
        return str(addr)
    return LOOPBACK_V4 if addr.version == 4 else LOOPBACK_V6


def guest_address(published_ip: str) -> str:
    """The guest address to dial for a port Docker published on `published_ip`.

    A wildcard proxy answers on the guest's loopback of that family; a specific one answers
    only on its own address. Raises ValueError when `published_ip` is not an IP address.
    """
    addr = _parse_ip(published_ip or "0.0.0.0")
    if addr.is_unspecified:
        return LOOPBACK_V4 if addr.version == 4 else LOOPBACK_V6
    return str(addr)


@dataclass(frozen=True)
class PortStatus:
    """One forward as `pyd port ls` and `pyd status` show it."""

    host: str  # "127.0.0.1:8080", "[::]:8080"
    guest: str  # "127.0.0.1:80"
    proto: str
    origin: str  # "manual" or "docker:<id>/<name>"
    state: str  # a PortState's value
    detail: str = ""  # why, when not listening


# --- Docker's view --------------------------------------------------------------------------


def _published_port(value: Any) -> int | None:
    """A published port from the API, or None when the entry publishes nothing."""
    if value is None or value == "" or value == 0 or value == "0":
        return None
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"published port out of range: {value!r}")
    return port


def _docker_origin(container_id: str, names: Iterable[str]) -> str:
    # A container linked into another also lists "/other/alias"; its own name has no '/'.
    stripped = [n.lstrip("/") for n in names if n]
    own = [n for n in stripped if "/" not in n] or stripped
    short_id = container_id[:12]
    return f"docker:{short_id}/{own[0]}" if own else f"docker:{short_id}"


def _docker_forward(published_ip: str, port: int, proto: str, origin: str, policy: str) -> Forward:
    return Forward(
        host_ip=host_address(published_ip, policy),
        host_port=port,
        guest_port=port,
        proto=proto.lower(),
        origin=origin,
        guest_ip=guest_address(published_ip),
    )


def bindings_from_containers(
    containers: Iterable[Mapping[str, Any]], bind_policy: str = "docker"
) -> list[Forward]:
    """The forwards for the published ports of `GET /containers/json` (Engine API 1.45).

    Each item's "Ports" lists {"IP", "PrivatePort", "PublicPort", "Type"}; entries without
    "PublicPort" are exposed but unpublished and are skipped, and so are containers whose
    "State" says they hold no ports (with `all=1`, exited ones are listed too). A range such
    as `-p 8000-8002:80-82` arrives as one entry per port. Sorted, without duplicates.
    Raises ValueError on an address or port that the API would never report.
    """
    _check_policy(bind_policy)
    found: set[Forward] = set()
    for container in containers:
        state = container.get("State")
        if isinstance(state, str) and state not in ("running", "paused"):
            continue
        origin = _docker_origin(str(container.get("Id", "")), container.get("Names") or [])
        for entry in container.get("Ports") or []:
            port = _published_port(entry.get("PublicPort"))
            if port is None:
                continue
            found.add(
                _docker_forward(
                    str(entry.get("IP") or ""),
                    port,
                    str(entry.get("Type") or "tcp"),
                    origin,
                    bind_policy,
                )
            )
    return sorted(found)


# --- manual forwards ------------------------------------------------------------------------


def _spec_error(spec: str, problem: str, hint: str = _SPEC_HINT) -> UsageError:
    return UsageError(f"invalid port forward {spec!r}: {problem}", hint=hint)


def _spec_port(spec: str, text: str, which: str) -> int:
    if "-" in text:
        raise _spec_error(
            spec,
            "port ranges are not supported here",
            hint="add each port separately, e.g. `pyd port add 8000:80` then "
            "`pyd port add 8001:81`",
        )
    if not _PORT.fullmatch(text):
        raise _spec_error(spec, f"{which} {text!r} is not a port number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise _spec_error(spec, f"{which} {port} is outside 1-65535")
    return port


def _spec_host_ip(spec: str, text: str, bracketed: bool) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise _spec_error(
            spec,
            f"host address {text!r} is not an IP address",
            hint="give the host address as an IP, e.g. 127.0.0.1:8080:80, 0.0.0.0:8080:80 or "
            "[::1]:8080:80 (names such as localhost are not resolved: they may mean IPv4, "
            "IPv6 or both)",
        ) from None
    if bracketed and addr.version == 4:
        raise _spec_error(spec, "only IPv6 addresses go in brackets")
    return str(addr)


def parse_port_spec(spec: str) -> Forward:
    """A manual forward from `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]`, as `pyd port add`
    takes it.

    The host address defaults to 127.0.0.1: a forward is private unless the user opens it
    up. IPv6 addresses go in brackets ("[::1]:8080:80"). UDP travels framed over SSH as a
    published UDP port does (udp_listener); SCTP is refused. Raises UsageError with an
    example for anything else that does not parse.
    """
    text = spec.strip()
    body, slash, proto = text.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto == "sctp":
        raise _spec_error(
            spec,
            "SCTP cannot be forwarded",
            hint="pyd carries TCP and UDP over SSH; drop the /sctp to forward the TCP port",
        )
    if proto not in FORWARDED_PROTOS:
        raise _spec_error(spec, f"unknown protocol {proto!r} (tcp and udp are forwarded)")

    host_ip = MANUAL_DEFAULT_HOST_IP
    if body.startswith("["):
        address, bracket, rest = body[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise _spec_error(spec, "expected [IPV6]:HOSTPORT:GUESTPORT")
        host_ip = _spec_host_ip(spec, address, bracketed=True)
        parts = rest[1:].split(":")
        if len(parts) != 2:
            raise _spec_error(spec, "expected [IPV6]:HOSTPORT:GUESTPORT")
    else:
        parts = body.split(":")
        if len(parts) == 3:
            host_ip = _spec_host_ip(spec, parts.pop(0), bracketed=False)
        elif len(parts) > 3:
            raise _spec_error(
                spec, "too many ':' (an IPv6 address must be in brackets, e.g. [::1]:8080:80)"
            )
        elif len(parts) < 2:
            raise _spec_error(spec, "both a host port and a guest port are needed")
    host_port = _spec_port(spec, parts[0], "host port")
    guest_port = _spec_port(spec, parts[1], "guest port")
    return Forward(host_ip, host_port, guest_port, proto, MANUAL)


# What `pyd port rm` takes besides a whole spec: "8080", "127.0.0.1:8080", "[::1]:8080".
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[^\]]*)\]:|(?P<v4>\d+(?:\.\d+)+):)?(?P<port>\d+)")


def removal_matcher(text: str) -> Callable[[Forward], bool]:
    """Which manual forwards `pyd port rm TEXT` means. A host address left out matches any,
    so `8080` and `8080:80` find a forward whatever address it listens on."""
    hint = (
        "give a forward as `pyd port ls` shows it (127.0.0.1:8080:80), or its host port "
        "with or without the address (8080, 127.0.0.1:8080, [::1]:8080)"
    )
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        try:
            wanted = parse_port_spec(text)
        except UsageError as e:
            raise UsageError(e.message, hint) from None
        body = text.strip().partition("/")[0]
        any_ip = not body.startswith("[") and body.count(":") == 1
        return lambda f: (
            (f.host_port, f.guest_port, f.proto)
            == (wanted.host_port, wanted.guest_port, wanted.proto)
            and (any_ip or f.host_ip == wanted.host_ip)
        )
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise UsageError(f"{text!r}: host port {port} is outside 1-65535", hint)
    written_ip = match["v6"] if match["v6"] is not None else match["v4"]
    host_ip = None
    if written_ip is not None:
        try:
            address = ipaddress.ip_address(written_ip)
        except ValueError:
            raise UsageError(f"{text!r}: {written_ip!r} is not an IP address", hint) from None
        if (address.version == 6) != (match["v6"] is not None):
            raise UsageError(f"{text!r}: only IPv6 addresses go in brackets", hint)
        host_ip = str(address)
    return lambda f: f.host_port == port and host_ip in (None, f.host_ip)


def format_port_spec(f: Forward) -> str:
    """The spec `parse_port_spec` reads back as `f` (for a manual forward): the form that
    the instance config stores. The protocol is written only when it is not tcp."""
    spec = f"{address_text(f.host_ip, f.host_port)}:{f.guest_port}"
    return spec if f.proto == "tcp" else f"{spec}/{f.proto}"


# --- deciding what to listen on -------------------------------------------------------------


def forwardable(forwards: Iterable[Forward]) -> list[Forward]:
    """The forwards the agent can carry (TCP and UDP), sorted."""
    return sorted({f for f in forwards if f.proto in FORWARDED_PROTOS})


def unforwarded(forwards: Iterable[Forward]) -> list[Forward]:
    """The forwards the agent cannot carry (SCTP), sorted: to be reported, since a user who
    published them expects them to work."""
    return sorted({f for f in forwards if f.proto not in FORWARDED_PROTOS})


def describe(f: Forward) -> str:
    """One line for status and logs: "0.0.0.0:8080 -> guest:8080/tcp (docker:abc123/web)"."""
    guest = (
        f"guest:{f.guest_port}"
        if f.guest_ip == LOOPBACK_V4
        else f"guest:{address_text(f.guest_ip, f.guest_port)}"
    )
    return f"{address_text(f.host_ip, f.host_port)} -> {guest}/{f.proto} ({f.origin})"


def overlaps(a: Forward, b: Forward) -> bool:
    """Whether the host cannot hold listeners for both `a` and `b` at once.

    Same protocol and port, and the same address family, and either the same address or a
    wildcard on either side: Linux refuses 127.0.0.1:8080 next to 0.0.0.0:8080. The rule is
    applied on every host, so that which forward wins never depends on the OS (BSD and
    Windows would let the specific one steal part of the wildcard's traffic). "::" and
    "0.0.0.0" do not overlap: the forwarder binds IPv6 listeners with IPV6_V6ONLY.
    """
    if a.proto != b.proto or a.host_port != b.host_port:
        return False
    try:
        addr_a, addr_b = _parse_ip(a.host_ip), _parse_ip(b.host_ip)
    except ValueError:
        return a.host_ip == b.host_ip
    if addr_a.version != addr_b.version:
        return False
    return addr_a == addr_b or addr_a.is_unspecified or addr_b.is_unspecified


def merge(docker: list[Forward], manual: list[Forward]) -> tuple[list[Forward], list[Conflict]]:
    """The forwards to hold, and those left out because another holds their address.

    Precedence: manual forwards (the user asked for them by hand) before Docker's; then by
    origin; then by the forward's own order. A port one container published is kept or left
    out as a whole: when its 0.0.0.0 binding loses, its "::" twin is left out too, otherwise
    "localhost:8080" would reach one program over IPv4 and another over IPv6.
    Both lists come back sorted.
    """
    groups: dict[tuple[int, str, str, int, str], list[Forward]] = {}
    for rank, forwards in ((0, manual), (1, docker)):
        for f in sorted(set(forwards)):
            # Manual forwards stand alone; a container's port is one group over its addresses.
            group_ip = f.host_ip if rank == 0 else ""
            groups.setdefault((rank, f.origin, f.proto, f.host_port, group_ip), []).append(f)

    kept: list[Forward] = []
    conflicts: list[Conflict] = []
    for members in (groups[k] for k in sorted(groups, key=lambda k: (k[0], k[1], groups[k]))):
        clashes = {f: w for f in members if (w := _first_overlap(kept, f)) is not None}
        if clashes:
            loser, holder = next(iter(clashes.items()))
            twin_reason = (
                f"left out because its twin {address_text(loser.host_ip, loser.host_port)}"
                f"/{loser.proto} is taken by {describe(holder)}; a published port is "
                "forwarded on all its addresses or on none"
            )
            for f in members:
                reason = _clash_reason(f, clashes[f]) if f in clashes else twin_reason
                conflicts.append(Conflict(f, reason))
            continue
        admitted: list[Forward] = []
        for f in members:
            earlier = _first_overlap(admitted, f)
            if earlier is None:
                admitted.append(f)
            else:
                conflicts.append(Conflict(f, _clash_reason(f, earlier)))
        kept.extend(admitted)
    return sorted(kept), sorted(conflicts)


def _first_overlap(held: Iterable[Forward], f: Forward) -> Forward | None:
    return next((h for h in held if overlaps(h, f)), None)


def _clash_reason(loser: Forward, winner: Forward) -> str:
    reason = f"host {address_text(loser.host_ip, loser.host_port)}/{loser.proto} is taken by "
    reason += describe(winner)
    if loser.host_ip != winner.host_ip:
        reason += "; a wildcard and a specific address cannot share a port"
    return reason


def reconcile(
    current: Iterable[Forward], desired: Iterable[Forward]
) -> tuple[list[Forward], list[Forward]]:
    """(to_open, to_close), both sorted, to turn the listeners `current` into `desired`.

    Listeners are matched by `key`; a listener whose target (guest address or port) or
    origin changed is closed and opened again. `desired` must be free of clashes (`merge`);
    two different forwards with one key in either argument raise ValueError.
    """
    now, want = _by_key(current, "current"), _by_key(desired, "desired")
    to_open = sorted(f for k, f in want.items() if now.get(k) != f)
    to_close = sorted(f for k, f in now.items() if want.get(k) != f)
    return to_open, to_close


def _by_key(forwards: Iterable[Forward], what: str) -> dict[tuple[str, str, int], Forward]:
    out: dict[tuple[str, str, int], Forward] = {}
    for f in forwards:
        other = out.setdefault(f.key, f)
        if other != f:
            raise ValueError(f"{what} forwards share a listener: {describe(other)}; {describe(f)}")
    return out
