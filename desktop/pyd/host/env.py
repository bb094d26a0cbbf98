"""What the guest takes over from the host's environment: proxies, the time zone, and the
platform and home directory that shares depend on."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")

# QEMU user-mode networking reaches the host's loopback at this address.
HOST_FROM_GUEST = "10.0.2.2"
_LOOPBACK = re.compile(r"(?<=[/@])(localhost|127\.0\.0\.1)(?=[:/]|$)")


def proxy_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The host's proxy variables, with a proxy on the host's loopback rewritten to the
    address the guest reaches it at."""
    found: dict[str, str] = {}
    for var in PROXY_VARS:
        value = env.get(var)
        if value:
            no_proxy = var.lower() == "no_proxy"
            found[var] = value if no_proxy else _LOOPBACK.sub(HOST_FROM_GUEST, value)
    return found


def host_timezone(localtime: Path = Path("/etc/localtime")) -> str:
    """The zone name behind /etc/localtime (a symlink into zoneinfo), or "" if unknown."""
    try:
        target = str(localtime.resolve())
    except OSError:
        return ""
    marker = "/zoneinfo/"
    return target.split(marker, 1)[1] if marker in target else ""


@dataclass(frozen=True)
class Host:
    """What shares and platform defaults depend on about the host: sys.platform, and the
    user's home directory ("" when it is not known). Read by this_host, at the edge; pure
    code takes it as a value."""

    platform: str
    home: str


def this_host() -> Host:
    """sys.platform and the user's home directory (HOME, or USERPROFILE on Windows), or ""
    for the home when the system knows none (a service without HOME or a passwd entry)."""
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return Host(sys.platform, "")
    return Host(sys.platform, str(home) if home.is_absolute() else "")
