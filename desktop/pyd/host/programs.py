"""Finding the programs pyd runs (QEMU's, OpenSSH's) where each OS keeps them, not on PATH
alone: Windows' installers leave their folders off PATH (QEMU's C:\\Program Files\\qemu, the
OpenSSH client feature's System32\\OpenSSH in some shells), and a macOS GUI shell's PATH often
lacks Homebrew's prefix. The doctor and the code that runs a program ask the same functions,
so they never disagree about whether it is there.

Pure (the OS is a parameter, so tests cover linux, darwin and win32 anywhere): the folders to
try in order and the file name; the edge (find_ssh) checks which file exists here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

PATH_TOKEN = "PATH"  # in a search list: the PATH environment variable's directories

Exists = Callable[[PurePath], bool]


def pure_path(system: str, text: str) -> PurePath:
    return PureWindowsPath(text) if system == "win32" else PurePosixPath(text)


def exe_name(program: str, system: str) -> str:
    """`program` as a file name on `system` (".exe" on Windows)."""
    return program + ".exe" if system == "win32" else program


def search_dirs(system: str, entries: Iterable[str], path_env: str) -> list[PurePath]:
    """The folders to look in, in order: `entries` with PATH_TOKEN expanded to `path_env`'s
    folders (`system`'s separator; Windows allows quoted entries)."""
    sep = ";" if system == "win32" else ":"
    dirs: list[PurePath] = []
    for entry in entries:
        if entry == PATH_TOKEN:
            for part in path_env.split(sep):
                part = part.strip().strip('"')
                if part:
                    dirs.append(pure_path(system, part))
        else:
            dirs.append(pure_path(system, entry))
    return dirs


def find_in(dirs: Iterable[PurePath], name: str, exists: Exists) -> PurePath | None:
    """The first `dirs / name` that `exists`, or None."""
    return next((d / name for d in dirs if exists(d / name)), None)


def openssh_dirs(system: str, env: Mapping[str, str]) -> list[str]:
    """Where OpenSSH's programs are, in order. Windows: PATH, then the OpenSSH Client
    feature's folder, which a shell started before the feature was added (or one whose
    PATH was trimmed) lacks; a 32-bit Python sees System32 redirected to SysWOW64, which
    holds no OpenSSH, and reaches the real one as Sysnative."""
    if system != "win32":
        return [PATH_TOKEN]
    root = env.get("SystemRoot") or env.get("SYSTEMROOT") or r"C:\Windows"
    return [PATH_TOKEN, rf"{root}\System32\OpenSSH", rf"{root}\Sysnative\OpenSSH"]


def find_openssh(
    program: str, system: str, env: Mapping[str, str], exists: Exists
) -> PurePath | None:
    """Where OpenSSH's `program` ("ssh", "sftp-server") is on `system`, or None."""
    dirs = search_dirs(system, openssh_dirs(system, env), env.get("PATH", ""))
    return find_in(dirs, exe_name(program, system), exists)


# -- the edge ------------------------------------------------------------------------------


def is_executable(path: PurePath) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.X_OK)


def find_ssh(
    system: str, env: Mapping[str, str] | None = None, exists: Exists = is_executable
) -> str | None:
    """The OpenSSH client pyd runs (shares, `pyd ssh`) and the doctor reports, or None."""
    found = find_openssh("ssh", system, os.environ if env is None else env, exists)
    return None if found is None else str(found)
