"""Loopback ports, and TCP addresses as people write them."""

from __future__ import annotations

import socket


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_tcp_and_udp_port() -> int:
    """A port free now for TCP on 127.0.0.1 and for UDP on every address (a container's
    `-p H:C/tcp -p H:C/udp` needs both)."""
    while True:
        port = free_loopback_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        return port


def address_text(ip: str, port: int | str) -> str:
    """An address as people write it: 127.0.0.1:80, [::1]:80."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
