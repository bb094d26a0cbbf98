"""The watchdog edge: the OS's own notifications for the watched host directories.

Which observer is a pure choice per platform (`observer_kind`): inotify on Linux (one
watch per directory, no cost at idle), FSEvents on macOS (one stream per tree), and
ReadDirectoryChangesW on Windows. Nothing polls: a 50,000-file tree costs nothing while
it does not change (bench/file_events.py measures it). The kernel is asked only for what
is replayed: no opens, closes or reads, which every SFTP read of the guest's causes here.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pyd.fileevents.changes import Change
from pyd.fileevents.targets import Target
from pyd.host.threads import Deadline

log = logging.getLogger("pyd.fileevents")

INOTIFY, FSEVENTS, WINDOWS_API = "inotify", "fsevents", "windows"

OnChange = Callable[[Target, Change, str, bool, str], None]


def observer_kind(platform: str) -> str | None:
    """The native observer for `platform` (sys.platform), None where pyd knows none: a
    polling observer would stat every file of the tree every second."""
    if platform.startswith("linux"):
        return INOTIFY
    return {"darwin": FSEVENTS, "win32": WINDOWS_API}.get(platform)


def _observer(kind: str) -> Any:
    """watchdog's observer class of `kind`, imported only on its own OS."""
    if kind == INOTIFY:
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver()
    if kind == FSEVENTS:
        from watchdog.observers.fsevents import FSEventsObserver

        return FSEventsObserver()
    from watchdog.observers.read_directory_changes import WindowsApiObserver

    return WindowsApiObserver()


def _event_filter() -> list[type[Any]]:
    from watchdog import events as ev

    # Not FileAttribEvent (the replay's own chmod comes back as one), nor opens and closes.
    return [
        ev.FileModifiedEvent,
        ev.FileCreatedEvent,
        ev.DirCreatedEvent,
        ev.FileDeletedEvent,
        ev.DirDeletedEvent,
        ev.FileMovedEvent,
        ev.DirMovedEvent,
    ]


_CHANGES = {
    "modified": Change.MODIFIED,
    "created": Change.CREATED,
    "deleted": Change.DELETED,
    "moved": Change.MOVED,
}


class Watcher:
    """One observer and a watch per target; `on_change(target, change, path, is_dir, dest)`
    runs in the observer's thread. A thread owner (pyd.host.threads)."""

    def __init__(self, kind: str, on_change: OnChange) -> None:
        self._observer = _observer(kind)
        self._on_change = on_change
        self._watches: dict[Target, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        self._observer.start()

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Watches exactly `targets`. A target that cannot be watched (gone, no permission,
        the OS's watch limit) is logged with a hint and left out."""
        wanted = set(targets)
        with self._lock:
            for target in [t for t in self._watches if t not in wanted]:
                self._observer.unschedule(self._watches.pop(target))
                log.info("file events: no longer watching %s", target.host_dir)
            for target in sorted(wanted - set(self._watches)):
                watch = self._schedule(target)
                if watch is not None:
                    self._watches[target] = watch
                    log.info("file events: watching %s", target.host_dir)

    def watched(self) -> list[str]:
        """The host paths watched now."""
        with self._lock:
            return sorted(t.host_dir for t in self._watches)

    def _schedule(self, target: Target) -> Any:
        path, recursive = target.host_dir, True
        try:
            if not stat.S_ISDIR(os.stat(path).st_mode):  # a bind of one file
                path, recursive = os.path.dirname(path), False
            handler = _Handler(target, self._on_change, path)
            return self._observer.schedule(
                handler, path, recursive=recursive, event_filter=_event_filter()
            )
        except OSError as e:
            hint = ""
            if e.errno == errno.ENOSPC:  # inotify_add_watch: the per-user limit of watches
                hint = " (raise it: sysctl -w fs.inotify.max_user_watches=524288)"
            log.warning("file events: cannot watch %s: %s%s", path, e.strerror or e, hint)
            return None

    def close(self) -> None:
        self._observer.stop()

    def join(self, deadline: Deadline) -> bool:
        self._observer.join(deadline.left())
        return not self._observer.is_alive()


class _Handler:
    """watchdog's handler protocol (dispatch), kept to the one call it needs. FSEvents names
    a path by its real path (macOS's /var is /private/var): it is given back under the path
    watched, which is the one the share knows."""

    def __init__(self, target: Target, on_change: OnChange, watched: str) -> None:
        self.target = target
        self.on_change = on_change
        self.watched = watched
        self.real = os.path.realpath(watched)

    def _as_watched(self, path: str) -> str:
        if self.real != self.watched and (
            path == self.real or path.startswith(self.real.rstrip(os.sep) + os.sep)
        ):
            return self.watched + path[len(self.real) :]
        return path

    def dispatch(self, event: Any) -> None:
        change = _CHANGES.get(event.event_type)
        if change is None:
            return
        src = self._as_watched(os.fsdecode(event.src_path))
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        dest = self._as_watched(dest) if dest else ""
        self.on_change(self.target, change, src, event.is_directory, dest)
