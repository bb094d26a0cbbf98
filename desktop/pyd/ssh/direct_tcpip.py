"""Connections to TCP ports in the guest over SSH: the "direct-tcpip" channel (RFC 4254
section 7.2), the one `ssh -L PORT:HOST:GUESTPORT` opens for every connection.

The channel's window and maximum packet size for data coming from the guest are ours to
choose: see MAX_PACKET_SIZE.
"""

from __future__ import annotations

import paramiko

from pyd.errors import PydError
from pyd.host.loopback import address_text
from pyd.ssh.channel_open import channel_open_errors, open_channel

KIND = "direct-tcpip"

# What we advertise for data coming to us: OpenSSH's own values for TCP forwards (and
# paramiko's defaults). Measured with bench/port_forward.py: sshd reads at most 32 KiB from
# the guest socket per turn of its loop and sends what it read, so a larger maximum packet
# only shows up when its output is blocked (rarely: under emulation sshd runs out of CPU
# first) and changed neither speed nor host CPU; nor did an 8 MiB window.
MAX_PACKET_SIZE = 32 * 1024
WINDOW_SIZE = 2 * 1024 * 1024


class DirectTcpipError(PydError):
    """The guest's sshd would not connect us to a TCP port, or the SSH connection failed."""

    def __init__(self, message: str, guest: tuple[str, int], hint: str = "") -> None:
        super().__init__(message, hint)
        self.guest = guest


def open_direct_tcpip(
    transport: paramiko.Transport,
    guest: tuple[str, int],
    origin: tuple[str, int],
    timeout: float = 10,
) -> paramiko.Channel:
    """A channel connected to `guest` (address, port) as the guest's sshd dials it;
    `origin` is the host peer the connection is for (sshd logs it).

    Raises DirectTcpipError (carrying `guest`) when sshd refuses (nothing listening there,
    AllowTcpForwarding off) or the SSH connection is gone or too slow."""
    where = address_text(guest[0], guest[1])
    with channel_open_errors(
        where,
        f"is anything listening on {where} in the guest? "
        "(`pyd ssh -- busybox netstat -ltn` lists what is)",
        lambda message, hint: DirectTcpipError(message, guest, hint),
    ):
        return open_channel(
            transport,
            KIND,
            timeout,
            dest_addr=(guest[0], guest[1]),
            src_addr=(origin[0], origin[1]),
            window_size=WINDOW_SIZE,
            max_packet_size=MAX_PACKET_SIZE,
        )
