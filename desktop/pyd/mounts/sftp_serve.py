"""pyd's built-in SFTP server as a process of its own: `python -m pyd.mounts.sftp_serve ROOT
[--read-only]` answers SFTP on its stdin and stdout for the directory ROOT, confined to it
(pyd.mounts.sftp_server), until its stdin ends.

The agent pipes it straight to a share's OpenSSH session (pyd.mounts.openssh_link), where the
system's sftp-server would be: no byte of a share passes through the agent, and there is no
paramiko transport, only paramiko's SFTP message handling. It imports only what that needs.
Requests arrive pipelined (sshfs keeps many in flight), so stdin is read in large chunks and
each of paramiko's small exact-size reads (4-byte length, then the body) is served from that
buffer: one read(2) for many requests instead of two per request; answers are written
together the same way (PipeStream).
"""

from __future__ import annotations

import contextlib
import os
import sys

_CHUNK = 256 * 1024  # a 64 KiB WRITE and its header fit several times


class PipeStream:
    """Two file descriptors as the byte stream serve_sftp reads and writes (send/recv/close).
    Answers wait in a buffer until every request already read has been answered (or the
    buffer is large), as OpenSSH's sftp-server does: one write(2), and one wake-up of the
    client, for a burst of pipelined requests rather than one per answer."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._in = read_fd
        self._out = write_fd
        self._buf = b""
        self._at = 0
        self._pending = bytearray()

    def recv(self, bufsize: int, /) -> bytes:
        if self._at >= len(self._buf):
            self.flush()  # about to wait for the client: it must have every answer first
            self._buf = os.read(self._in, max(bufsize, _CHUNK))
            self._at = 0
        start = self._at
        self._at = min(len(self._buf), start + bufsize)
        return self._buf[start : self._at]

    def send(self, data: bytes, /) -> int:
        self._pending += data
        if len(self._pending) >= _CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        view = memoryview(self._pending)
        while view:
            view = view[os.write(self._out, view) :]
        view.release()
        del self._pending[:]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.flush()
        for fd in (self._in, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)


def parse_args(argv: list[str]) -> tuple[str, bool]:
    """(root, writable) from `ROOT [--read-only]`; ValueError for anything else."""
    rest = list(argv)
    writable = "--read-only" not in rest
    rest = [a for a in rest if a != "--read-only"]
    if len(rest) != 1 or rest[0].startswith("-"):
        raise ValueError("usage: python -m pyd.mounts.sftp_serve ROOT [--read-only]")
    return rest[0], writable


def main(argv: list[str]) -> int:
    try:
        root, writable = parse_args(argv)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    # fds 0 and 1 carry SFTP: nothing may print to stdout, so it points at stderr from here.
    read_fd, write_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    if sys.platform == "win32":
        import msvcrt

        for fd in (read_fd, write_fd):
            msvcrt.setmode(fd, os.O_BINARY)

    # paramiko imports `invoke` (about half its import time) only for ssh_config's "Match
    # exec", which an SFTP server never reads: this process goes without it.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    from pyd.errors import PydError
    from pyd.mounts.sftp_server import serve_sftp

    try:
        serve_sftp(PipeStream(read_fd, write_fd), root, writable)
    except PydError as e:
        print(f"pyd sftp server: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
