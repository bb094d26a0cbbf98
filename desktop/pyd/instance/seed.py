"""Seed contents as data (pure): file name -> bytes. The guest's reader is
guest-image/overlay/usr/lib/pyd/seed; keep the two in step."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pyd.errors import UsageError
from pyd.host.env import PROXY_VARS

SEED_LABEL = "cidata"
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")


@dataclass(frozen=True)
class Seed:
    instance_id: str
    hostname: str
    authorized_key: str  # one OpenSSH public key line
    host_private_key: str  # OpenSSH PEM of the guest's ed25519 host key
    host_public_key: str
    proxy: dict[str, str] = field(default_factory=dict)
    timezone: str = ""
    # QEMU user-mode networking's fixed addresses (also libvirt's <interface type='user'>).
    net_address: str = "10.0.2.15/24"
    net_gateway: str = "10.0.2.2"
    net_dns: str = "10.0.2.3"
    # False: the guest cuts itself and its containers off the host's loopback, which QEMU
    # maps to net_gateway (guest-image/overlay/usr/lib/pyd/hostaccess).
    host_access: bool = True


def proxy_ports_at(proxy: Mapping[str, str], gateway: str) -> tuple[int, ...]:
    """The host ports of the proxies that point at `gateway` (a proxy on the host's
    loopback, rewritten for the guest): they stay open when host access is off, so pulls
    still go through the proxy. A proxy URL without a port means its scheme's default."""
    ports: set[int] = set()
    for var, value in proxy.items():
        if var.lower() == "no_proxy":
            continue
        url = urlsplit(value if "://" in value else f"http://{value}")
        try:
            port = url.port
        except ValueError:
            continue  # not a port the guest could use either
        if url.hostname == gateway:
            ports.add(port or (443 if url.scheme == "https" else 80))
    return tuple(sorted(ports))


def seed_problems(seed: Seed) -> list[str]:
    problems = []
    if not _HOSTNAME.match(seed.hostname):
        problems.append(f"hostname {seed.hostname!r}: use a-z, 0-9 and '-', at most 63")
    if seed.timezone and (not _TIMEZONE.match(seed.timezone) or ".." in seed.timezone):
        problems.append(f"time zone {seed.timezone!r} is not a zone name like Europe/Berlin")
    for key in seed.proxy:
        if key not in PROXY_VARS:
            problems.append(f"proxy variable {key!r} is not one of {', '.join(PROXY_VARS)}")
    for text, what in ((seed.authorized_key, "authorized key"), (seed.host_public_key, "host key")):
        if "\n" in text.strip() or not text.startswith("ssh-"):
            problems.append(f"{what} must be one OpenSSH public key line")
    return problems


def render_seed(seed: Seed) -> dict[str, bytes]:
    """The seed volume's files. Values reach a root shell in the guest, so every one is
    validated and shell-quoted."""
    problems = seed_problems(seed)
    if problems:
        raise UsageError("invalid instance settings: " + "; ".join(problems))
    env = {
        "PYD_INSTANCE": seed.instance_id,
        "PYD_HOSTNAME": seed.hostname,
        "PYD_TIMEZONE": seed.timezone,
        "PYD_NET_ADDRESS": seed.net_address,
        "PYD_NET_GATEWAY": seed.net_gateway,
        "PYD_NET_DNS": seed.net_dns,
        **{f"PYD_{k}": v for k, v in sorted(seed.proxy.items())},
    }
    if not seed.host_access:
        ports = proxy_ports_at(seed.proxy, seed.net_gateway)
        env |= {"PYD_HOST_ACCESS": "off", "PYD_HOST_PORTS": " ".join(map(str, ports))}
    env_text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())
    meta = f"instance-id: {seed.instance_id}\nlocal-hostname: {seed.hostname}\n"
    return {
        "meta-data": meta.encode(),
        "user-data": b"#cloud-config\n{}\n",
        "pyd/env": env_text.encode(),
        "pyd/authorized_keys": (seed.authorized_key.strip() + "\n").encode(),
        "pyd/ssh_host_ed25519_key": seed.host_private_key.encode(),
        "pyd/ssh_host_ed25519_key.pub": (seed.host_public_key.strip() + "\n").encode(),
    }
