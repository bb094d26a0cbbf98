"""Whether this machine's docker CLI has the compose plugin, found as the CLI finds it, so that
`pyd compose ARGS` runs the guest's compose where `docker compose` would only say "unknown
command: docker compose" (issue 20: a docker CLI installed without Docker Desktop often has
no plugin).

The CLI looks in (docker/cli, cli-plugins/manager): its config directory's `cli-plugins`,
then config.json's `cliPluginsExtraDirs` (where Docker Desktop on macOS and Homebrew's
docker-compose put theirs), then a few system directories per OS. Looking costs a handful of
stat calls and reading config.json; asking `docker compose version` would cost a process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

from pyd.guestdocker.tools import COMPOSE_PLUGIN_DIRS

WINDOWS = "win32"


def system_plugin_dirs(platform: str, env: Mapping[str, str]) -> list[PurePath]:
    """The directories the docker CLI searches after the user's own, on `platform`."""
    if platform == WINDOWS:
        roots = [env.get("ProgramData", ""), env.get("ProgramFiles", "")]
        return [PureWindowsPath(root, "Docker", "cli-plugins") for root in roots if root]
    return [PurePosixPath(d) for d in COMPOSE_PLUGIN_DIRS]  # docker/cli's list for POSIX


def extra_plugin_dirs(config_json: str | None) -> list[str]:
    """config.json's `cliPluginsExtraDirs` (none when the file is missing or not JSON: the
    CLI then fails or ignores it too, and the guest's compose is the better bet)."""
    if not config_json:
        return []
    try:
        data = json.loads(config_json)
    except ValueError:
        return []
    dirs = data.get("cliPluginsExtraDirs") if isinstance(data, dict) else None
    if not isinstance(dirs, list):
        return []
    return [d for d in dirs if isinstance(d, str) and d]


def plugin_candidates(
    config_dir: PurePath, config_json: str | None, platform: str, env: Mapping[str, str]
) -> list[PurePath]:
    """Every file the docker CLI of `platform` would run for `docker compose`, in its order."""
    name = "docker-compose.exe" if platform == WINDOWS else "docker-compose"
    kind = PureWindowsPath if platform == WINDOWS else PurePosixPath
    dirs: list[PurePath] = [config_dir / "cli-plugins"]
    dirs += [kind(d) for d in extra_plugin_dirs(config_json)]
    dirs += system_plugin_dirs(platform, env)
    return [d / name for d in dirs]


def has_compose_plugin(
    candidates: Sequence[PurePath], runnable: Callable[[PurePath], bool]
) -> bool:
    return any(runnable(c) for c in candidates)


def host_has_compose(config_dir: Path, platform: str, env: Mapping[str, str]) -> bool:
    """The edge: whether the docker CLI configured in `config_dir` finds the plugin here."""
    try:
        config_json: str | None = (config_dir / "config.json").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        config_json = None
    candidates = plugin_candidates(config_dir, config_json, platform, env)
    return has_compose_plugin(candidates, _runnable)


def _runnable(path: PurePath) -> bool:
    # Windows has no execute bit: os.access then says whether the file exists.
    return os.path.isfile(path) and os.access(path, os.X_OK)
