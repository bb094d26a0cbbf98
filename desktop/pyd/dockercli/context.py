"""The docker CLI context that points `docker` at an instance, written as the CLI's own files.

Writing the files instead of running `docker context create` works on hosts without a docker
CLI and costs no process start. Only the named context's own directories and the
`currentContext` key of config.json are ever changed: other contexts, credentials ("auths")
and every other setting stay as they were.

Layout (docker CLI 28, cli/context/store): $DOCKER_CONFIG or ~/.docker holds config.json
and contexts/meta/<sha256 of the name>/meta.json; TLS material sits under contexts/tls/<same>.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from pyd.errors import PydError
from pyd.host.atomicfile import write_atomic

DEFAULT_CONTEXT = "default"  # docker's built-in context (DOCKER_HOST or the local socket)
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
_CURRENT = "currentContext"
# docker's own rule for context names (cli/command/context: validateContextName).
_VALID_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.+-]+")


def meta_dir_name(name: str) -> str:
    """The directory docker keeps a context's files in: the sha256 of its name, in hex."""
    return hashlib.sha256(name.encode()).hexdigest()


def context_meta(name: str, host_url: str, description: str) -> dict[str, Any]:
    """meta.json of a context whose docker endpoint is `host_url`, as the docker CLI writes it."""
    metadata = {"Description": description} if description else {}  # docker omits it if empty
    return {
        "Name": name,
        "Metadata": metadata,
        "Endpoints": {"docker": {"Host": host_url, "SkipTLSVerify": False}},
    }


def config_dir() -> Path:
    """Where the docker CLI keeps its config: $DOCKER_CONFIG, else ~/.docker."""
    env = os.environ.get("DOCKER_CONFIG")
    return Path(env).expanduser() if env else Path.home() / ".docker"


def ensure_context(name: str, host_url: str, description: str, make_current: bool) -> None:
    """Create or update context `name`; with make_current, plain `docker` commands then use it."""
    _check_name(name)
    if "://" not in host_url:
        raise ValueError(f"not an endpoint URL: {host_url!r}")
    meta = _meta_dir(name) / META_FILE
    text = json.dumps(context_meta(name, host_url, description), separators=(",", ":"))
    try:
        unchanged = meta.read_text(encoding="utf-8") == text
    except (FileNotFoundError, UnicodeDecodeError):
        unchanged = False
    if not unchanged:
        meta.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_atomic(meta, text, new_mode=0o644)
    if make_current and current_context() != name:
        _set_current(name)


def remove_context(name: str) -> None:
    """Remove context `name`; if it was current, docker falls back to the default context.

    (`docker context rm` refuses to remove the current context without -f; with -f it drops
    currentContext, as `docker context use default` does. Removing an instance should leave
    `docker` usable, so this does the same.)
    """
    _check_name(name)
    if current_context() == name:
        _set_current(None)
    for kind in ("meta", "tls"):
        directory = config_dir() / "contexts" / kind / meta_dir_name(name)
        if directory.exists():
            shutil.rmtree(directory)


def current_context() -> str:
    """The context `docker context use` chose (config.json), "default" when none.

    DOCKER_CONTEXT and DOCKER_HOST in a shell override it for that shell; this reads the
    persistent choice only.
    """
    return str(_read_config().get(_CURRENT) or DEFAULT_CONTEXT)


def _check_name(name: str) -> None:
    if name == DEFAULT_CONTEXT or not _VALID_NAME.fullmatch(name):
        raise ValueError(f"{name!r} cannot be a docker context created by pyd")


def _meta_dir(name: str) -> Path:
    return config_dir() / "contexts" / "meta" / meta_dir_name(name)


def _read_config() -> dict[str, Any]:
    path = config_dir() / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, str(e)) from None
    if not text.strip():
        return {}  # the docker CLI reads an empty config.json as no settings
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _unreadable(path, str(e)) from None
    if not isinstance(data, dict):
        raise _unreadable(path, "not a JSON object")
    return data


def _unreadable(path: Path, detail: str) -> PydError:
    return PydError(
        f"cannot read the docker CLI config {path} ({detail})",
        hint="fix the JSON in that file; pyd changes only its currentContext key",
    )


def _set_current(name: str | None) -> None:
    """Set or (None) drop currentContext, keeping every other key and their order."""
    data = _read_config()
    if name is None:
        data.pop(_CURRENT, None)
    else:
        data[_CURRENT] = name
    path = config_dir() / CONFIG_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # 0600 for a new file, as docker makes it: config.json may hold registry credentials.
    write_atomic(path, json.dumps(data, indent="\t"), new_mode=0o600)
