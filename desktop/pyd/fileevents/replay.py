"""The guest's side: one long-lived shell in the guest raises the events, batch by batch.

What it does to a file must change neither its content nor its times on the host, even
through sshfs's attribute cache, which may be seconds stale: `touch -r f f` through a stale
cache would move the host's mtime back, a truncate to a stale size would cut the file. So:
- chmod to the mode the host has now (the agent's own stat, a moment old): the guest's
  kernel raises IN_ATTRIB on the entry and on its directory (what libuv/Node's fs.watch,
  chokidar and busybox inotifyd listen to), sshfs drops its cached attributes of it so the
  watcher's next read sees the host's, and the host gets a chmod to the mode it already has
  (its ctime moves; nothing else);
- for a file, also an open for writing without O_CREAT or O_TRUNC, closed without a write
  (dd conv=nocreat,notrunc from /dev/null): IN_CLOSE_WRITE, what watchers that ignore
  attributes wait for (entr, inotifywait -e close_write, notify-based ones), and nothing
  written on the host. Without O_CREAT a file deleted meanwhile is not made again.
The shell (`sh` reading its stdin) runs for as long as the SSH connection: one exec per
connection, not per event.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paramiko

from pyd.errors import PydError
from pyd.fileevents.changes import Kind
from pyd.ssh.link_errors import LINK_ERRORS

_SEND_ERRORS: tuple[type[Exception], ...] = (PydError, *LINK_ERRORS)

log = logging.getLogger("pyd.fileevents")

SHELL = "exec sh >/dev/null 2>&1"  # no output: nothing for the host to drain
MAX_LINE = 32 * 1024  # bytes of paths per command: far below the guest's ARG_MAX
CLOSE_WRITE_MAX = 64  # files per batch that also get IN_CLOSE_WRITE (a process each)
SSH_WAIT = 2.0  # a batch waits this long for SSH; then it is dropped (the link is down)

OpenTransport = Callable[[float], paramiko.Transport]


@dataclass(frozen=True, order=True)
class GuestReplay:
    """One event to raise in the guest: `path` is the guest's, `mode` the host's (0o7777)."""

    kind: Kind
    path: str
    mode: int


def _chunks(paths: Sequence[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    size = 0
    for p in paths:
        q = shlex.quote(p)
        if out[-1] and size + len(q) > MAX_LINE:
            out.append([])
            size = 0
        out[-1].append(q)
        size += len(q) + 1
    return [c for c in out if c]


def guest_script(batch: Sequence[GuestReplay]) -> str:
    """The shell text for one batch: chmods grouped by mode, then the close-writes."""
    by_mode: dict[int, list[str]] = {}
    for r in batch:
        by_mode.setdefault(r.mode & 0o7777, []).append(r.path)
    lines = [
        f"chmod {mode:04o} -- {' '.join(chunk)}"
        for mode, paths in sorted(by_mode.items())
        for chunk in _chunks(paths)
    ]
    files = [r.path for r in batch if r.kind is Kind.TOUCH][:CLOSE_WRITE_MAX]
    lines += [
        f"for f in {' '.join(chunk)}; do "
        'dd if=/dev/null of="$f" conv=nocreat,notrunc status=none; done'
        for chunk in _chunks(files)
    ]
    return "".join(line + "\n" for line in lines)


class GuestShell:
    """The long-lived shell in the guest; opened on first use and again after the link
    drops. send() is called from one thread (the flusher); close() from any."""

    def __init__(self, transport: OpenTransport) -> None:
        self._transport = transport
        self._chan: paramiko.Channel | None = None
        self._lock = threading.Lock()
        self._closed = False

    def send(self, script: str) -> bool:
        """Runs `script` in the guest (without waiting for it); False when the guest cannot
        be reached now. One retry on a fresh shell: the old one may have died with its link."""
        data = script.encode()
        for _attempt in range(2):
            try:
                chan = self._channel()
                chan.sendall(data)
                return True
            except _SEND_ERRORS as e:
                self._drop()
                if self._closed:
                    return False
                log.debug("file events: guest shell: %s", e)
        return False

    def _channel(self) -> paramiko.Channel:
        with self._lock:
            chan = self._chan
        if chan is not None and not chan.closed and not chan.exit_status_ready():
            return chan
        self._drop()
        chan = self._transport(SSH_WAIT).open_session(timeout=30)
        chan.exec_command(SHELL)
        with self._lock:
            if self._closed:
                chan.close()
                raise PydError("file events: closed")
            self._chan = chan
        return chan

    def _drop(self) -> None:
        with self._lock:
            chan, self._chan = self._chan, None
        if chan is not None:
            with contextlib.suppress(*LINK_ERRORS):
                chan.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop()
