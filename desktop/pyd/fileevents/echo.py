"""The replay must not come back as a host change: pure.

The guest's replay is a chmod to the file's own mode, which reaches the host through sshfs
as an SFTP setstat. On Linux the host sees an attribute change, which the watcher does not
ask for; elsewhere (FSEvents reports a chmod as a modification) it would come back as a
"modified" event, be replayed, come back again: a loop. So each replayed file's signature
(size, mtime in ns, inode: what a real edit changes and a chmod does not) is remembered, and
a later "modified" with the same signature is dropped.
"""

from __future__ import annotations

from collections import OrderedDict

Signature = tuple[int, int, int]  # (st_size, st_mtime_ns, st_ino)
REMEMBERED = 100_000  # files: far more than a burst replays, a few MB at most


class EchoFilter:
    """Signatures of the files last replayed, the oldest forgotten first. Not thread-safe."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._seen: OrderedDict[str, Signature] = OrderedDict()

    def replayed(self, path: str, signature: Signature) -> None:
        self._seen[path] = signature
        self._seen.move_to_end(path)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def is_echo(self, path: str, signature: Signature | None) -> bool:
        """Whether a "modified" on `path` changed nothing a replay had not already told
        (None: the file is gone, which its deletion's own event tells)."""
        return signature is None or self._seen.get(path) == signature

    def forget(self, path: str) -> None:
        self._seen.pop(path, None)
