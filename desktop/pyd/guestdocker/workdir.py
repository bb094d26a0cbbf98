"""The current directory of `pyd docker` in the guest.

The guest's docker CLI reads files where it runs: `docker build .`, `-v ./src:/src`,
`--env-file .env`, compose.yaml. So the command runs in the guest directory that shows the
host's current directory: inside a share, the share's mount point plus the rest of the path
(on Windows hosts, `C:\\Users\\me\\src` under a share of `C:\\Users\\me` at `/c/Users/me` is
`/c/Users/me/src`). Outside every share there is no such directory: a command that may read
files there is refused with the list of shares; one that cannot (`docker ps`) runs in `/`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from pyd.errors import UsageError
from pyd.guestdocker.cmdline import RUNS, find_command, has_option
from pyd.mounts.shares import Share, describe
from pyd.mounts.winpath import WINDOWS, guest_path

# Where a command that reads no host files runs when the current directory is not shared.
UNSHARED_WORKDIR = "/"

# Subcommands that never read files of the current directory: they talk to the engine only.
_NO_FILES = frozenset(
    {
        "attach",
        "commit",
        "diff",
        "events",
        "help",
        "history",
        "images",
        "info",
        "inspect",
        "kill",
        "login",
        "logout",
        "logs",
        "network",
        "pause",
        "port",
        "ps",
        "pull",
        "push",
        "rename",
        "restart",
        "rm",
        "rmi",
        "search",
        "start",
        "stats",
        "stop",
        "system",
        "tag",
        "top",
        "unpause",
        "update",
        "version",
        "volume",
        "wait",
    }
)
# Management commands whose subcommands read no files, except the ones named.
_NO_FILES_EXCEPT = {
    "container": frozenset({"cp", "export", "run", "create", "exec"}),
    "image": frozenset({"build", "import", "load", "save"}),
}
# run, create and exec read host files only through these (`docker run -v ./src:/src`).
FILE_OPTIONS = frozenset({"-v", "--volume", "--mount", "--env-file", "--label-file", "--cidfile"})


def needs_workdir(args: Sequence[str]) -> bool:
    """Whether `docker ARGS` may read or write files in the current directory. Unknown
    subcommands may."""
    command = find_command(args)
    if not command.words:
        return False  # `docker --version`, `docker` alone
    first = command.words[0]
    if first in _NO_FILES:
        return False
    if command.words in RUNS:
        return has_option(args[command.start :], FILE_OPTIONS, short="v")
    exceptions = _NO_FILES_EXCEPT.get(first)
    if exceptions is not None and len(command.words) == 2:
        return command.words[1] in exceptions
    return True


def guest_workdir(host_dir: str, shares: Sequence[Share], platform: str) -> str | None:
    """The guest directory that shows `host_dir` (absolute) through one of `shares`, or None
    when no share holds it.

    When several shares hold it (`~` at its own path, and `~/src` at /mnt/src), the one that
    shows it at the path the host uses wins, so that `$PWD` in arguments and the current
    directory agree; otherwise the innermost share. Windows paths compare case-insensitively.
    """
    own = guest_path(host_dir, platform)
    parts = _parts(own)
    fold = platform == WINDOWS
    found: list[tuple[int, str]] = []
    for share in shares:
        base = _parts(guest_path(share.location, platform))
        if len(base) <= len(parts) and _same(parts[: len(base)], base, fold):
            rest = parts[len(base) :]
            found.append((len(base), "/".join([share.mount_point.rstrip("/"), *rest]) or "/"))
    if not found:
        return None
    same_path = [path for _depth, path in found if path == own]
    return same_path[0] if same_path else max(found)[1]


def unshared_error(host_dir: str, shares: Sequence[Share], name_option: str = "") -> UsageError:
    """The error for a command that needs `host_dir` in the guest when no share holds it.
    `name_option` is added to the suggested command (" -n dev" for instance dev)."""
    listed = "; ".join(map(describe, shares)) if shares else "nothing is shared"
    return UsageError(
        f"the current directory {host_dir} is not shared with the guest, so docker there "
        f"cannot see its files (shared: {listed})",
        hint=f"share it (or a directory above it) with `pyd mount add {shlex.quote(host_dir)}"
        f"{name_option}`, or run the command from inside a shared directory",
    )


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _same(a: Sequence[str], b: Sequence[str], fold: bool) -> bool:
    if fold:
        return all(x.casefold() == y.casefold() for x, y in zip(a, b, strict=True))
    return list(a) == list(b)
