"""The sandbox-exec profile that confines OpenSSH's sftp-server to one share on macOS.

macOS checks a sandboxed process's file operations against the path a name resolves to, so a
symlink in the share that points out is refused where it is followed, whatever its text. The
profile denies everything, then allows: starting the server and loading the system's
libraries (read-only), looking up the user (Open Directory, over Mach), metadata of the
share's ancestors (sftp-server's realpath walks them, nothing else of them), /dev/null, and
file operations beneath the share (reads only for a read-only share; writes there are also
refused by `sftp-server -R`).

Pure text: pyd cannot run sandbox-exec here, so the unit tests pin the profile's rules.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

SANDBOX_EXEC = "/usr/bin/sandbox-exec"

# Where dyld finds the system's libraries (the shared cache on macOS 11+).
_SYSTEM_READ = (
    "/usr/lib",
    "/System/Library",
    "/System/Cryptexes",
    "/private/var/db/dyld",
    "/Library/Apple",
)


def quote(text: str) -> str:
    """A string literal of the profile language (a Scheme string)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ancestors(path: str) -> list[str]:
    """The directories above `path`, from "/" down."""
    out: list[str] = []
    parent = posixpath.dirname(path)
    while True:
        out.append(parent)
        if parent == "/":
            break
        parent = posixpath.dirname(parent)
    return out[::-1]


def sandbox_profile(share_paths: Iterable[str], writable: bool, program: str) -> str:
    """The profile for `program` serving the share known by `share_paths` (the path as
    configured and the resolved one: /var/... is /private/var/... on macOS)."""
    paths = sorted({posixpath.normpath(p) for p in share_paths if p.startswith("/")})
    if not paths:
        raise ValueError("a share needs an absolute path")
    tops = sorted({a for p in paths for a in ancestors(p)})
    lines = [
        "(version 1)",
        "(deny default)",
        f"(allow process-exec (literal {quote(program)}))",
        "(allow file-read* (literal "
        + quote(program)
        + ")"
        + "".join(f" (subpath {quote(s)})" for s in _SYSTEM_READ)
        + ")",
        "(allow sysctl-read)",
        '(allow mach-lookup (global-name "com.apple.system.opendirectoryd.libinfo")'
        ' (global-name "com.apple.system.notification_center")'
        ' (global-name "com.apple.system.logger"))',
        "(allow file-read-metadata" + "".join(f" (literal {quote(a)})" for a in tops) + ")",
        '(allow file-read* file-write-data (literal "/dev/null"))',
        "(allow file-read*" + "".join(f" (subpath {quote(p)})" for p in paths) + ")",
    ]
    if writable:
        lines.append("(allow file-write*" + "".join(f" (subpath {quote(p)})" for p in paths) + ")")
    return "\n".join(lines) + "\n"


def sandbox_argv(
    share_paths: Iterable[str], writable: bool, program: str, args: list[str]
) -> list[str]:
    return [SANDBOX_EXEC, "-p", sandbox_profile(share_paths, writable, program), program, *args]
