"""QEMU's monitor played on a unix socket for unit tests: QMP's greeting, then one reply per
command line; subclasses say what each command answers and what happens after."""

from __future__ import annotations

import json
import socket
import sys
from io import BufferedIOBase
from pathlib import Path

from tests.unit.listening import accept_each


class QmpStandIn:
    def __init__(self, path: Path) -> None:
        self.commands: list[str] = []
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
        with conn, conn.makefile("rwb") as f:
            f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
            f.flush()
            for line in f:
                command = json.loads(line)["execute"]
                self.commands.append(command)
                f.write(json.dumps(self.reply(command, f)).encode() + b"\n")
                f.flush()
                self.after(command)

    def close(self) -> None:
        self.sock.close()
