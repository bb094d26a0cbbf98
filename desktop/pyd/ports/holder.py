"""Who holds a TCP port on this host: for an error message that says what to stop, not just
that the port is taken. Best effort, read-only, never raises: None when it cannot be known
(another user's process, an OS without a way we know to ask)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def port_holder(host_ip: str, port: int) -> str | None:
    """What listens where binding `host_ip`:`port` failed, as "pid 1234 (nginx)"; None
    when that cannot be found out."""
    try:
        if sys.platform.startswith("linux"):
            return _linux_holder(host_ip, port, Path("/proc"))
        if sys.platform == "darwin":
            return _lsof_holder(port)
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return None


# -- Linux: /proc/net/tcp{,6} for the listening socket, /proc/*/fd for its owner -------------


def _proc_address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as /proc/net/tcp prints it: the raw bytes in 32-bit words, each printed as
    a native-endian integer."""
    raw = bytes.fromhex(hex_addr)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    addr = ipaddress.ip_address(raw)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def listening_inodes(proc: Path, host_ip: str, port: int) -> list[int]:
    """The socket inodes listening on `port` that a bind of `host_ip` clashes with, best
    match first: the same address, then a wildcard, then any other address of the family."""
    wanted = ipaddress.ip_address(host_ip)
    ranked: list[tuple[int, int]] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_addr, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) != port:
                continue
            addr = _proc_address(hex_addr)
            if addr == wanted:
                rank = 0
            elif addr.is_unspecified or wanted.is_unspecified:
                rank = 1
            else:
                rank = 2
            ranked.append((rank, int(fields[9])))
    return [inode for _, inode in sorted(ranked) if inode]


def _linux_holder(host_ip: str, port: int, proc: Path) -> str | None:
    inodes = listening_inodes(proc, host_ip, port)
    if not inodes:
        return None
    owners = _socket_owners(proc, {f"socket:[{i}]" for i in inodes})
    for inode in inodes:
        pid = owners.get(f"socket:[{inode}]")
        if pid is not None:
            return _describe_pid(proc, pid)
    return None


def _socket_owners(proc: Path, links: set[str]) -> dict[str, int]:
    """For each "socket:[inode]" in `links`, the lowest pid with it open (only the processes
    we may look into: our own, or all when root)."""
    found: dict[str, int] = {}
    for pid in sorted(_pids(proc)):
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if target in links and target not in found:
                found[target] = pid
        if len(found) == len(links):
            break
    return found


def _pids(proc: Path) -> Iterable[int]:
    return (int(entry) for entry in os.listdir(proc) if entry.isdigit())


def _describe_pid(proc: Path, pid: int) -> str:
    try:
        name = (proc / str(pid) / "comm").read_text().strip()
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({name})"


# -- macOS: lsof -------------------------------------------------------------------------------


def _lsof_holder(port: int) -> str | None:
    lsof = shutil.which("lsof") or ("/usr/sbin/lsof" if Path("/usr/sbin/lsof").exists() else None)
    if lsof is None:
        return None
    out = subprocess.run(
        [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpc"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout
    return parse_lsof(out)


def parse_lsof(output: str) -> str | None:
    """The first process of `lsof -F pc` output ("p1234", "cnginx" lines), as "pid 1234
    (nginx)"."""
    pid: str | None = None
    for line in output.splitlines():
        if line.startswith("p"):
            if pid is not None:
                break
            pid = line[1:]
        elif line.startswith("c") and pid is not None:
            return f"pid {pid} ({line[1:]})"
    return f"pid {pid}" if pid else None
