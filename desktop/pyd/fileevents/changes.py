"""What a host change means for watchers in the guest: pure.

inotify events do not cross sshfs, so the agent tells the guest itself. A modified file gets
an event on itself; an entry created, deleted or renamed gets one on its parent directory,
which makes a directory watcher (chokidar, libuv, watchfiles) read it again and find what
came or went. A directory's own "modified" (the OS's echo of a child's change) says nothing
the child's event does not, so it is dropped.
"""

from __future__ import annotations

import enum
import ntpath
import posixpath
from dataclasses import dataclass


class Change(enum.StrEnum):
    """A host change as the watcher reports it (watchdog's event types, without its import)."""

    MODIFIED = "modified"
    CREATED = "created"
    DELETED = "deleted"
    MOVED = "moved"


class Kind(enum.StrEnum):
    """What the guest is asked to do."""

    TOUCH = "touch"  # a file's content changed: an event on the file itself
    RESCAN = "rescan"  # a directory's entries changed: an event on the directory


@dataclass(frozen=True, order=True)
class Replay:
    """One event to raise in the guest, named by its host path."""

    kind: Kind
    host_path: str


def parent(path: str, platform: str) -> str:
    """The directory holding `path`, in the host's own convention."""
    mod = ntpath if platform == "win32" else posixpath
    return mod.dirname(path.rstrip("\\/" if platform == "win32" else "/")) or path


def replays_for(
    change: Change, path: str, is_dir: bool, platform: str, dest: str = ""
) -> tuple[Replay, ...]:
    """The events the guest needs for one host change (`dest`: where a move went)."""
    if change is Change.MODIFIED:
        return () if is_dir else (Replay(Kind.TOUCH, path),)
    found = [Replay(Kind.RESCAN, parent(path, platform))]
    if change is Change.MOVED and dest:
        found.append(Replay(Kind.RESCAN, parent(dest, platform)))
    return tuple(dict.fromkeys(found))
