"""Host paths as the guest names them: POSIX paths stay themselves, and a Windows drive path
`C:\\Users\\me` is `/c/Users/me` in the guest (the drive letter in lower case), the way WSL
(`/mnt/c/...`), Git Bash and Docker Desktop (`/c/...`, `//c/...`) spell them. Pure text:
nothing here looks at a disk, and the same answers come on every host.

Both directions normalise lexically, as Windows itself does (`..` is resolved in the text,
not by following links), so a translated path always translates back to the same place.
"""

from __future__ import annotations

import posixpath
import re

from pyd.errors import UsageError

WINDOWS = "win32"  # sys.platform on Windows

# Characters Windows refuses in a file name; ":" also marks an NTFS stream (file:stream).
_RESERVED = set('<>:"|?*') | {chr(c) for c in range(32)}
_DRIVE = re.compile(r"([A-Za-z]):")
_GUEST_DRIVE = re.compile(r"/([a-z])(?:/|\Z)")
_SEPARATORS = re.compile(r"[\\/]+")
_EXTENDED = ("\\\\?\\", "//?/")  # \\?\C:\... names C:\... without Win32's path rewriting

_WINDOWS_HINT = r"give an absolute path with its drive letter, e.g. C:\Users\me\src"


def windows_to_guest(path: str) -> str:
    r"""`C:\Users\me` -> `/c/Users/me`. Forward slashes and mixed separators are read too.

    Raises UsageError for a relative path (`src`, `C:src`, `\src`: their meaning depends on
    the current drive and directory), a network (UNC) path, or a name Windows cannot hold.
    """
    text = path
    if text.startswith(_EXTENDED) and _DRIVE.match(text, 4):
        text = text[4:]
    if re.match(r"[\\/]{2}", text):
        raise UsageError(
            f"{path!r} is a network (UNC) or device path; only local drives can be shared",
            hint="share a directory on a local drive, or map the network share to a drive "
            "letter and share that (e.g. Z:\\projects)",
        )
    drive = _DRIVE.match(text)
    if drive is None:
        raise UsageError(f"{path!r} is not an absolute Windows path", hint=_WINDOWS_HINT)
    rest = text[2:]
    if not rest.startswith(("\\", "/")):
        raise UsageError(
            f"{path!r} is relative to the current directory of drive {drive[1].upper()}:",
            hint=_WINDOWS_HINT,
        )
    parts = _normalised(_SEPARATORS.split(rest), path, "Windows")
    return "/" + drive[1].lower() + "".join("/" + p for p in parts)


def guest_to_windows(path: str) -> str:
    r"""`/c/Users/me` -> `C:\Users\me`: the Windows path behind a guest path that
    windows_to_guest gave. Raises UsageError for a guest path outside `/<drive letter>`."""
    drive = _GUEST_DRIVE.match(path)
    if drive is None:
        raise UsageError(
            f"{path!r} is not a Windows drive path as the guest names it",
            hint=r"a path on drive C: is /c/... in the guest (C:\Users\me is /c/Users/me)",
        )
    parts = _normalised(path[2:].split("/"), path, "guest")
    if any("\\" in p for p in parts):
        raise UsageError(
            f"{path!r} has a backslash in a name, which Windows reads as a separator",
            hint="rename the file or directory in the guest",
        )
    return drive[1].upper() + ":\\" + "\\".join(parts)


def guest_path(host_path: str, platform: str) -> str:
    """Where the guest sees `host_path` of a host running `platform` (sys.platform): the
    Windows translation on win32, the normalised path itself on POSIX hosts. Raises
    UsageError for a path that is not absolute."""
    if platform == WINDOWS:
        return windows_to_guest(host_path)
    return posix_absolute(host_path)


def posix_absolute(path: str) -> str:
    """`path` normalised ("/a//b/../c/" is "/a/c"), if it is an absolute POSIX path.
    Raises UsageError otherwise."""
    if not path.startswith("/"):
        raise UsageError(
            f"{path!r} is not an absolute path", hint="give a path from /, e.g. /home/me/src"
        )
    if "\0" in path:
        raise UsageError(f"{path!r} has a NUL character, which no path can hold")
    # normpath keeps a leading "//" (POSIX leaves its meaning open); the guest's Linux does not.
    return "/" + posixpath.normpath(path).lstrip("/")


def _normalised(parts: list[str], path: str, which: str) -> list[str]:
    """The names of a path below its root, with "." and ".." resolved in the text; ".." at
    the root stays at the root, as on Windows. Names Windows cannot hold are refused in
    both directions, so whatever translates one way translates back."""
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            continue
        bad = sorted(set(part) & _RESERVED)
        if bad:
            shown = " ".join(repr(c) for c in bad)
            raise UsageError(
                f"{which} path {path!r}: the name {part!r} has characters Windows does not "
                f"allow in names ({shown})",
                hint='Windows names cannot contain < > : " | ? * or control characters',
            )
        out.append(part)
    return out
