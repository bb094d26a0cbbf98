"""Which host directories to watch, and where each host path is in the guest: pure.

Only what running containers bind-mount from a share is watched (`docker run -v
"$PWD":/src` watches $PWD), not the whole share: a home directory holds far more files than
any project, and every watched directory costs the OS a watch. A share whose [[mounts]]
table says `file_events = false` is left alone, and so is a read-only one: the replay is a
setattr in the guest, which a read-only mount refuses.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyd.mounts.binds import binds_on
from pyd.mounts.shares import Share

WINDOWS = "win32"


@dataclass(frozen=True, order=True)
class Target:
    """One host directory to watch (recursively), and the share it lies in."""

    host_dir: str
    share: Share


def host_path(guest: str, share: Share, platform: str) -> str:
    """The host path of `guest`, a path in the guest at or under `share`'s mount point."""
    rel = posixpath.relpath(posixpath.normpath(guest), share.mount_point)
    if rel == ".":
        return share.location
    sep = "\\" if platform == WINDOWS else "/"
    return share.location.rstrip(sep) + sep + rel.replace("/", sep)


def guest_path(host: str, share: Share, platform: str) -> str | None:
    """Where the guest sees host path `host`, or None when it is not in `share`."""
    sep = "\\" if platform == WINDOWS else "/"
    root = share.location.rstrip(sep)
    fold = str.casefold if platform == WINDOWS else str  # NTFS names ignore case
    if fold(host) == fold(root) or fold(host) == fold(share.location):
        return share.mount_point
    if not fold(host).startswith(fold(root + sep)):
        return None
    rel = host[len(root) + 1 :].replace(sep, "/")
    return posixpath.join(share.mount_point, rel)


def outermost(targets: Iterable[Target], platform: str) -> tuple[Target, ...]:
    """`targets` without those inside another (a recursive watch of the outer one sees them)."""
    sep = "\\" if platform == WINDOWS else "/"
    fold = str.casefold if platform == WINDOWS else str
    found = sorted(set(targets), key=lambda t: (len(t.host_dir), t.host_dir))
    kept: list[Target] = []
    for t in found:
        inside = any(
            fold(t.host_dir) == fold(k.host_dir)
            or fold(t.host_dir).startswith(fold(k.host_dir.rstrip(sep) + sep))
            for k in kept
        )
        if not inside:
            kept.append(t)
    return tuple(sorted(kept))


def watched_shares(shares: Iterable[Share], off: Collection[str]) -> list[Share]:
    """The shares whose changes are replayed: writable, and not switched off (`off` holds
    the locations of shares whose table says file_events = false)."""
    return [s for s in shares if s.writable and s.location not in off]


def watch_targets(
    containers: Iterable[Mapping[str, Any]],
    shares: Iterable[Share],
    off: Collection[str],
    platform: str,
) -> tuple[Target, ...]:
    """The host paths running containers bind-mount from watched shares, outermost only (a
    bind of a single file is watched through the directory holding it: pyd.fileevents.watch)."""
    live = watched_shares(shares, off)
    by_point = {s.mount_point: s for s in live}
    found = []
    for _name, source, point in binds_on(containers, by_point):
        share = by_point[point]
        found.append(Target(host_path(source, share, platform), share))
    return outermost(found, platform)
