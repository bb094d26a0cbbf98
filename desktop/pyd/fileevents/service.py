"""The agent's one entry point for file-change events: FileEvents, a thread owner.

The agent gives it its SSH session's transport, the shares (and which are switched off) and
every list of running containers its container watch reads; FileEvents watches what those
containers bind-mount from the shares and replays each change in the guest:

    watch (observer thread) -> echo filter -> coalescer -> flusher thread -> guest shell
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol

from pyd.fileevents.changes import Change, Kind, Replay, replays_for
from pyd.fileevents.coalesce import Coalescer
from pyd.fileevents.echo import EchoFilter, Signature
from pyd.fileevents.replay import GuestReplay, GuestShell, OpenTransport, guest_script
from pyd.fileevents.targets import Target, guest_path, watch_targets
from pyd.fileevents.watch import Watcher, observer_kind
from pyd.host.threads import Deadline, join_threads
from pyd.mounts.shares import Share

log = logging.getLogger("pyd.fileevents")


class Shell(Protocol):
    """Where batches go: the guest's shell (GuestShell), or a test's stand-in."""

    def send(self, script: str) -> bool: ...
    def close(self) -> None: ...


def _signature(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class FileEvents:
    """Replays host changes under running containers' binds in the guest. start(), then
    set_shares() and set_containers() whenever they change; close(), join(deadline)."""

    def __init__(self, transport: OpenTransport, platform: str, shell: Shell | None = None) -> None:
        self.platform = platform
        self._shell: Shell = shell or GuestShell(transport)
        kind = observer_kind(platform)
        self._watcher = Watcher(kind, self._changed) if kind is not None else None
        if kind is None:
            log.warning("file events: no native file watcher on %s; none are replayed", platform)
        self._shares: tuple[Share, ...] = ()
        self._off: frozenset[str] = frozenset()
        self._containers: list[Mapping[str, Any]] = []
        self._cond = threading.Condition()
        self._coalescer = Coalescer()
        self._echo = EchoFilter()
        self._where: dict[str, Target] = {}  # a pending replay's host path -> its target
        self._closed = False
        self._retarget = False  # the shares or containers changed: the watches follow
        self.replayed = 0  # events sent to the guest, for benches and the log
        self._thread = threading.Thread(target=self._flush, name="pyd-file-events", daemon=True)

    def start(self) -> None:
        if self._watcher is not None:
            self._watcher.start()
        self._thread.start()

    def set_shares(self, shares: Iterable[Share], off: Collection[str] = ()) -> None:
        """The configured shares; `off`: locations of those with file_events = false."""
        with self._cond:
            self._shares, self._off = tuple(shares), frozenset(off)
            self._retarget = True
            self._cond.notify()

    def set_containers(self, containers: list[Mapping[str, Any]]) -> None:
        """The running containers. Returns at once: watching a large tree takes the OS a
        while (one inotify watch per directory), and the caller (the container watch) also
        serves the port forwards."""
        with self._cond:
            self._containers = containers
            self._retarget = True
            self._cond.notify()

    def watching(self) -> list[str]:
        """The host directories watched now (set_containers takes effect moments later)."""
        return self._watcher.watched() if self._watcher is not None else []

    def _changed(self, target: Target, change: Change, path: str, is_dir: bool, dest: str) -> None:
        """From the observer's thread: one host change, filtered and queued."""
        if change is Change.MODIFIED and not is_dir:
            try:
                sig: Signature | None = _signature(os.lstat(path))
            except OSError:
                sig = None
            with self._cond:
                if self._echo.is_echo(path, sig):
                    return
        replays = replays_for(change, path, is_dir, self.platform, dest)
        with self._cond:
            for r in replays:
                self._where.setdefault(r.host_path, target)
                self._coalescer.add(r)
            self._cond.notify()

    def _flush(self) -> None:
        """The one worker thread: follows the targets, and sends each batch once due."""
        while True:
            with self._cond:
                while not (self._closed or self._retarget or self._coalescer.wait() == 0.0):
                    self._cond.wait(self._coalescer.wait())
                if self._closed:
                    return
                retarget, self._retarget = self._retarget, False
                targets = watch_targets(self._containers, self._shares, self._off, self.platform)
                batch = self._coalescer.take()
                where = {p: self._where.pop(p, None) for p in {r.host_path for r in batch}}
            if retarget and self._watcher is not None:
                self._watcher.set_targets(targets)
            guest = self._to_guest(batch, where)
            if guest and self._shell.send(guest_script(guest)):
                self.replayed += len(guest)

    def _to_guest(self, batch: list[Replay], where: dict[str, Target | None]) -> list[GuestReplay]:
        """Each replay with the host's mode now, at its guest path; a file's signature is
        remembered so the replay's echo is known. What is gone, or not what the replay
        expects (a file that is now a link), is skipped: its parent's event tells."""
        out = []
        for r in batch:
            target = where.get(r.host_path)
            if target is None:
                continue
            at = guest_path(r.host_path, target.share, self.platform)
            try:
                st = os.lstat(r.host_path)
            except OSError:
                continue
            want = stat.S_ISREG if r.kind is Kind.TOUCH else stat.S_ISDIR
            if at is None or not want(st.st_mode):
                continue
            if r.kind is Kind.TOUCH:
                with self._cond:
                    self._echo.replayed(r.host_path, _signature(st))
            out.append(GuestReplay(r.kind, at, stat.S_IMODE(st.st_mode)))
        return out

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._watcher is not None:
            self._watcher.close()
        self._shell.close()

    def join(self, deadline: Deadline) -> bool:
        ended = join_threads([self._thread], deadline)
        return (self._watcher.join(deadline) if self._watcher is not None else True) and ended
