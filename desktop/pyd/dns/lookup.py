"""The host OS's resolver: getaddrinfo, which reads the hosts file and asks whatever the OS
asks (a VPN's split DNS, mDNS for .local, the configured servers), as the host's own programs
do. Its errors, read per OS, tell a name that does not exist from a resolver that failed."""

from __future__ import annotations

import socket

from pyd.dns.answer import Lookup, Outcome

# getaddrinfo's error codes that mean "no such name" and "the name exists, no address", per
# OS (glibc's EAI_*, BSD's on macOS, Winsock's WSA* errors on Windows). The rest (EAI_AGAIN,
# EAI_FAIL, WSATRY_AGAIN, ...) is a failure: SERVFAIL, which clients retry elsewhere.
_NO_NAME = {
    "linux": frozenset({-2}),  # EAI_NONAME
    "darwin": frozenset({8}),  # EAI_NONAME
    "win32": frozenset({11001}),  # WSAHOST_NOT_FOUND
}
_NO_ADDRESS = {
    "linux": frozenset({-5, -9}),  # EAI_NODATA, EAI_ADDRFAMILY
    "darwin": frozenset({7}),  # EAI_NODATA (older resolvers)
    "win32": frozenset({11004}),  # WSANO_DATA
}


def outcome_of_error(code: int | None, platform: str) -> Outcome:
    """What a gaierror's code means on `platform` (other Unixes read as Linux)."""
    key = platform if platform in _NO_NAME else "linux"
    if code in _NO_NAME[key]:
        return Outcome.NO_NAME
    if code in _NO_ADDRESS[key]:
        return Outcome.FOUND
    return Outcome.FAILED


def host_lookup(name: str, platform: str) -> Lookup:
    """Every address the host resolves `name` to, IPv4 and IPv6, in the host's order."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as e:
        return Lookup(outcome_of_error(e.errno, platform))
    except (UnicodeError, ValueError):  # a label the IDNA codec refuses
        return Lookup(Outcome.NO_NAME)
    except OSError:
        return Lookup(Outcome.FAILED)
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in seen:
            seen.append(address)
    return Lookup(Outcome.FOUND, tuple(seen))
