"""QEMU's monitor played on a unix socket for unit tests: QMP's greeting, then one reply per
command line; subclasses say what each command answers and what happens after."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from io import BufferedIOBase
from pathlib import Path

from tests.unit.listening import accept_each


class QmpStandIn:
    exits_on: frozenset[str] = frozenset()  # commands at which QEMU exits (without a reply)
    sock: socket.socket  # declared here: on Windows __init__ raises before it is set

    def __init__(self, path: Path) -> None:
        self.commands: list[str] = []
        self.arguments: list[dict[str, object]] = []  # each command's, in order
        self.fds: list[int] = []  # descriptors received with commands (SCM_RIGHTS), open
        if sys.platform == "win32":  # the tests using it are skipped there
            raise NotImplementedError("no unix sockets in CPython on Windows")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        accept_each(self.sock, self._serve)

    def reply(self, command: str, out: BufferedIOBase) -> dict[str, object]:
        """The answer to `command` (events may be written to `out` before it)."""
        return {"return": {}}

    def after(self, command: str) -> None:
        """Runs once the answer to `command` is sent."""

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("wb") as f:
            f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            f.flush()
            for line in self._lines(conn):
                request = json.loads(line)
                command = request["execute"]
                self.commands.append(command)
                self.arguments.append(request.get("arguments", {}))
                if command in self.exits_on:
                    return  # QEMU ends: the connection closes, no reply
                f.write(json.dumps(self.reply(command, f)).encode() + b"\n")
                f.flush()
                self.after(command)

    def _lines(self, conn: socket.socket) -> Iterator[bytes]:
        """The client's lines, the descriptors sent along kept in `fds` (as QEMU does)."""
        if sys.platform == "win32":
            raise NotImplementedError("no SCM_RIGHTS on Windows")
        buffer = b""
        while True:
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 8)
            self.fds += fds
            if not data:
                return
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield line

    def close(self) -> None:
        self.sock.close()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()
