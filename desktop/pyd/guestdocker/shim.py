"""`pyd shim install|remove`: a `docker` command on PATH for hosts that have none, which runs
`pyd docker` (a POSIX sh script; `docker.cmd` on Windows).

It goes into ~/.local/bin by default, on every platform: where pipx and uv put the commands
they install, so it is usually on PATH already (platformdirs' user bin on Windows,
%LOCALAPPDATA%\\Programs, is on nobody's PATH). `--dir` chooses another directory.

Two rules protect a real docker: a shim is only written where no other `docker` is on PATH
(it would shadow that one, or be shadowed by it), and an existing file is only ever replaced
or deleted when it is a shim pyd wrote, recognised by the MARKER line in it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyd.errors import PydError
from pyd.mounts.winpath import WINDOWS

MARKER = "pyd-shim: docker launcher written by `pyd shim install`"
_MARKER_SEARCH = 512  # the marker sits in the first lines; a real docker is a large binary
DEFAULT_DIR = Path("~/.local/bin")


@dataclass(frozen=True)
class Installed:
    path: Path
    replaced: bool  # an older shim of ours was there
    on_path: bool  # its directory is on PATH


def shim_path(directory: Path, platform: str) -> Path:
    return directory / ("docker.cmd" if platform == WINDOWS else "docker")


def shim_text(launcher: Sequence[str], instance: str | None, platform: str) -> str:
    """The shim: runs `LAUNCHER docker [-n INSTANCE] -- ARGS`; the `--` keeps every argument
    the user gives for docker, even one that looks like pyd's own option."""
    pyd_args = ["docker", *(["-n", instance] if instance else []), "--"]
    if platform == WINDOWS:
        line = subprocess.list2cmdline([*launcher, *pyd_args])
        # cmd.exe passes %* as typed: its own quoting rules (^, %, !) still apply there.
        return f"@echo off\r\nrem {MARKER}\r\n{line} %*\r\nexit /b %ERRORLEVEL%\r\n"
    line = shlex.join([*launcher, *pyd_args])
    return f'#!/bin/sh\n# {MARKER}\nexec {line} "$@"\n'


def is_shim(path: Path) -> bool:
    """Whether `path` is a file that pyd's shim installer wrote."""
    try:
        with path.open("rb") as f:
            head = f.read(_MARKER_SEARCH)
    except OSError:
        return False
    return MARKER.encode() in head


def find_docker(path_env: str, exclude_shims: bool = True) -> Path | None:
    """The first `docker` command on the search path `path_env` (as PATH is written),
    passing over pyd's own shims."""
    for entry in path_env.split(os.pathsep):
        if not entry:
            continue
        found = shutil.which("docker", path=entry)
        if found is not None and not (exclude_shims and is_shim(Path(found))):
            return Path(found)
    return None


def on_path(directory: Path, path_env: str) -> bool:
    target = _normal(directory)
    return any(_normal(Path(e)) == target for e in path_env.split(os.pathsep) if e)


def install_shim(
    directory: Path, launcher: Sequence[str], instance: str | None, path_env: str, platform: str
) -> Installed:
    """Writes the shim into `directory` (created if missing). Refused (PydError) when
    another docker is on `path_env`, or when a file that is not our shim is in the way."""
    other = find_docker(path_env)
    if other is not None:
        raise PydError(
            f"a docker command already exists: {other}; a shim would shadow it or be "
            "shadowed by it, so none was written",
            hint="`pyd docker` and plain `docker` already use it (pyd points it at the "
            "instance with its docker context)",
        )
    path = shim_path(directory, platform)
    replaced = os.path.lexists(path)
    if replaced and not is_shim(path):
        raise PydError(
            f"{path} exists and is not a shim pyd wrote; it was left as it is",
            hint="remove or rename it yourself if it should go, or install the shim "
            "elsewhere with `pyd shim install --dir DIR`",
        )
    directory.mkdir(parents=True, exist_ok=True)
    text = shim_text(launcher, instance, platform)
    if replaced:
        tmp = path.with_name(f".{path.name}.pyd-new")
        tmp.unlink(missing_ok=True)
        _create(tmp, text)
        os.replace(tmp, path)
    else:
        _create(path, text)
    return Installed(path, replaced, on_path(directory, path_env))


def remove_shim(directory: Path, platform: str) -> Path | None:
    """Deletes our shim from `directory`; returns its path, or None when there is none.
    Refused (PydError) when the file there is not ours."""
    path = shim_path(directory, platform)
    if not os.path.lexists(path):
        return None
    if not is_shim(path):
        raise PydError(
            f"{path} is not a shim pyd wrote; it was left as it is",
            hint="it is probably a real docker command: remove it yourself if it should go",
        )
    path.unlink()
    return path


def _create(path: Path, text: str) -> None:
    """A new file only: never replaces one that appeared since we looked. Written as is
    (the .cmd file has its CRLFs already)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _normal(path: Path) -> str:
    return os.path.normcase(os.path.abspath(os.path.expanduser(path)))
