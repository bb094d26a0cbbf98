"""Shares as values: which host directories the guest sees, where, and whether it may write.

Docker runs in the guest, so `docker run -v "$PWD":/src` names a path that must exist in the
guest: each share makes a host directory visible there, by default at the same path (on
Windows at its translation, `C:\\Users\\me` at `/c/Users/me`), so that host paths given to
docker work unchanged. This module checks and combines shares; the agent mounts them.
Nothing here reads the disk: the host's platform and home directory come in as a
`pyd.host.env.Host`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pyd.errors import UsageError
from pyd.host.env import Host
from pyd.mounts.winpath import WINDOWS, guest_path, guest_to_windows, posix_absolute

# The guest's own system. A share may not be one of these, lie inside one, or contain one:
# it would hide what the guest runs on. /usr holds its programs and libraries (/bin, /sbin
# and /lib* point into it), /boot its kernel, /etc its settings (sshd's keys among them),
# /dev, /proc, /sys and /run are the kernel's and the running system's (docker.sock, the
# seed), and /var's standard directories hold its state, logs and caches, Docker's images
# and volumes among them (/var/lib/docker). Containing one refuses `/` and `/var` too.
SYSTEM_DIRS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/backups",
    "/var/cache",
    "/var/lib",
    "/var/local",
    "/var/lock",
    "/var/log",
    "/var/mail",
    "/var/opt",
    "/var/run",
    "/var/spool",
    "/var/tmp",
)
# The guest's /tmp holds its own temporary files and sockets, which a share served over SFTP
# cannot hold: /tmp itself is refused, a directory in it (Lima's /tmp/lima) is not.
#
# Not reserved, on purpose: /root, where the guest's root (the agent's SSH user) has its
# home, because sshd reads the agent's key from /etc/ssh instead
# (guest-image/overlay/etc/ssh/sshd_config.d/pyd.conf) so that a host running pyd as root
# can share its home at the same path; /home, /mnt, /media, /opt, /srv; and the rest of /var,
# such as macOS's /var/folders where $TMPDIR lies (Docker Desktop shares it for that reason).
GUEST_TMP = "/tmp"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WINDOWS_LOCATION = re.compile(r"[A-Za-z]:\\")


@dataclass(frozen=True, order=True)
class Share:
    """One host directory visible in the guest.

    `location` is the host directory: absolute and normalised (`C:\\Users\\me` on Windows,
    drive letter in upper case). `mount_point` is where the guest sees it: an absolute
    POSIX path. A share that is not `writable` is read-only in the guest.
    """

    location: str
    mount_point: str
    writable: bool


def describe(share: Share) -> str:
    """One line for messages: "/home/me/src (at /home/me/src, read-only)"."""
    mode = "writable" if share.writable else "read-only"
    return f"{share.location} (at {share.mount_point}, {mode})"


# --- one share ------------------------------------------------------------------------------


def expand_home(path: str, host: Host) -> str:
    """`path` with a leading `~` (alone, or before a separator) made the home directory.
    `~user` is refused: another user's home is not known to pure code."""
    seps = ("/", "\\") if host.platform == WINDOWS else ("/",)
    if path != "~" and not path.startswith(tuple("~" + s for s in seps)):
        if path.startswith("~"):
            raise UsageError(
                f"{path!r}: only ~ (your own home directory) is expanded",
                hint="write the directory's full path",
            )
        return path
    if not host.home:
        raise UsageError(
            f"{path!r}: the home directory is not known, so ~ cannot be expanded",
            hint="write the directory's full path",
        )
    return host.home + path[1:]


def host_location(path: str, host: Host) -> str:
    """The host directory `path` names, absolute and normalised as `Share.location` holds
    it; `~` is the home directory. Raises UsageError for a relative or network path."""
    expanded = expand_home(path, host)
    if host.platform == WINDOWS:
        # Through the guest's spelling and back: one canonical form, checked both ways.
        return guest_to_windows(guest_path(expanded, WINDOWS))
    return posix_absolute(expanded)


def check_mount_point(path: str) -> str:
    """`path` normalised, if the guest can mount a share there. Raises UsageError for a
    relative path, a path the guest keeps for itself (SYSTEM_DIRS, GUEST_TMP), or one with
    characters the guest's mount list cannot carry."""
    point = posix_absolute(path)
    if _CONTROL.search(point) or point != point.rstrip():
        raise UsageError(
            f"mount point {path!r} has a control character or ends in white space",
            hint="the guest keeps its mount points one per line: choose a plain path, "
            "e.g. /mnt/src",
        )
    hint = (
        "choose a mount point outside the guest's system directories, e.g. "
        + suggested_mount_point(point)
    )
    for system in SYSTEM_DIRS:
        if within(point, system):
            where = "is" if point == system else f"is inside {system}, which is"
            raise UsageError(f"mount point {point} {where} part of the guest's own system", hint)
        if within(system, point):
            raise UsageError(f"a share at {point} would hide the guest's own {system}", hint=hint)
    if within(GUEST_TMP, point):
        raise UsageError(
            f"a share at {point} would hide the guest's own {GUEST_TMP}",
            hint=f"a directory inside it is fine, e.g. {GUEST_TMP}/share",
        )
    return point


def make_share(
    location: str, host: Host, mount_point: str | None = None, writable: bool = True
) -> Share:
    """A checked share of `location` (`~` allowed), seen in the guest at `mount_point`, by
    default at the same path (translated on Windows)."""
    where = host_location(location, host)
    point = guest_path(where, host.platform) if mount_point is None else mount_point
    return Share(where, check_mount_point(point), writable)


def default_shares(host: Host) -> tuple[Share, ...]:
    """The home directory, writable: what Docker Desktop and Colima share by default, so that
    `docker run -v "$PWD":/src` works for every project under it and builds can write their
    output back (Lima shares ~ read-only, and making it writable is the first edit its users
    make). None when the home directory is unknown or lies where the guest keeps its own
    system (a service account's /var/lib/jenkins): a default must never make a config fail.
    """
    if not host.home:
        return ()
    try:
        return (make_share(host.home, host),)
    except UsageError:
        return ()


# --- shares together ------------------------------------------------------------------------


def within(path: str, root: str) -> bool:
    """Whether the normalised guest path `path` is `root` or lies inside it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _same_location(a: str, b: str) -> bool:
    """Windows file names are case-insensitive: C:\\Src and C:\\src are one directory."""
    if _WINDOWS_LOCATION.match(a) and _WINDOWS_LOCATION.match(b):
        return a.casefold() == b.casefold()
    return a == b


def conflict(held: Share, new: Share) -> UsageError | None:
    """Why `new` cannot be added next to `held`, or None.

    One host directory is shared once, and two shares cannot have the same or nested mount
    points: the outer share would hide the inner one whenever it is mounted after it (as
    after every reconnect), and making the inner mount point would create a directory on the
    host, inside the outer share.
    """
    undo = f"`pyd mount rm {held.location}` first"
    if _same_location(held.location, new.location):
        if held == new:
            return UsageError(f"{new.location} is already shared", hint="see `pyd mount ls`")
        return UsageError(
            f"{new.location} is already shared, as {describe(held)}",
            hint=f"a directory is shared once: {undo}, then add it again",
        )
    if held.mount_point == new.mount_point:
        return UsageError(
            f"mount point {new.mount_point} is taken by the share of {held.location}",
            hint=f"choose another mount point, or {undo}",
        )
    if within(new.mount_point, held.mount_point):
        rel = posixpath.relpath(new.mount_point, held.mount_point)
        if _same_location(_joined(held.location, rel), new.location):
            return UsageError(
                f"{new.location} is already in the guest, at {new.mount_point}, through the "
                f"share of {held.location}",
                hint=f"use it there; to share it on its own (e.g. read-only), {undo}",
            )
        return UsageError(
            f"mount point {new.mount_point} is inside {held.mount_point}, the mount point "
            f"of {held.location}",
            hint=f"nested shares are refused: choose a mount point outside "
            f"{held.mount_point}, or {undo}",
        )
    if within(held.mount_point, new.mount_point):
        return UsageError(
            f"mount point {new.mount_point} contains {held.mount_point}, the mount point "
            f"of {held.location}",
            hint=f"nested shares are refused: choose another mount point, or {undo}",
        )
    return None


def _joined(location: str, rel: str) -> str:
    sep = "\\" if _WINDOWS_LOCATION.match(location) else "/"
    return location.rstrip(sep) + sep + rel.replace("/", sep)


def share_conflicts(shares: Sequence[Share]) -> list[UsageError]:
    """Each share that cannot stand next to one before it, in order."""
    problems = []
    for i, share in enumerate(shares):
        found = (conflict(held, share) for held in shares[:i])
        problem = next((p for p in found if p is not None), None)
        if problem is not None:
            problems.append(problem)
    return problems


def with_share_added(shares: Sequence[Share], new: Share) -> tuple[Share, ...]:
    """`shares` and then `new`; refused when `new` conflicts with one of them."""
    for held in shares:
        problem = conflict(held, new)
        if problem is not None:
            raise problem
    return (*shares, new)


def with_share_removed(
    shares: Sequence[Share], named: str, location: str | None
) -> tuple[Share, ...]:
    """`shares` without the one the user `named` by its mount point or its host directory
    (`location`: what `named` means on the host, absolute; None when it names none).
    Refused, with the list of shares, when none or several match."""
    point = posix_absolute(named) if named.startswith("/") else None
    found = [
        s
        for s in shares
        if s.mount_point == point or (location is not None and _same_location(s.location, location))
    ]
    if not found:
        if not shares:
            raise UsageError(
                f"no share matches {named!r}: there are none",
                hint="`pyd mount add PATH` shares a directory",
            )
        raise UsageError(
            f"no share matches {named!r}",
            hint="give a share's host directory or its mount point; the shares are: "
            + "; ".join(map(describe, shares)),
        )
    if len(found) > 1:
        # One share has it as mount point, the other as directory: name each by its other.
        others = [s.location if s.mount_point == point else s.mount_point for s in found]
        raise UsageError(
            f"{named!r} matches {len(found)} shares: " + "; ".join(map(describe, found)),
            hint="name one by its other path: "
            + " or ".join(f"`pyd mount rm {o}`" for o in others),
        )
    return tuple(s for s in shares if s != found[0])


def suggested_mount_point(path: str) -> str:
    """A mount point to suggest for a share that cannot be at `path`: /mnt/<its last name>."""
    name = posixpath.basename(path.replace("\\", "/").rstrip("/")) or "share"
    return f"/mnt/{name}"
