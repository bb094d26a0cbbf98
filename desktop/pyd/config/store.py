"""An instance's config.toml on disk: read with the shipped defaults, rewritten in place.

The file is the user's: a rewrite keeps their comments, key order and spelling of unchanged
values (tomlkit), and a file pyd cannot read is reported, never replaced or deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.toml_document import TOMLDocument

from pyd.atomicfile import write_atomic
from pyd.config.model import InstanceConfig, parse_config, setting_matches, to_toml_dict
from pyd.errors import PydError
from pyd.resources import vmconfig

DEFAULTS = "defaults"  # vmconfig/defaults.toml
_NEW_FILE_HEADER = "pyd instance settings; `pyd config set KEY VALUE` edits this file"


def load_config(path: Path) -> InstanceConfig:
    """The instance's settings over the defaults; the defaults alone when there is no file."""
    doc = _read(path)
    data = doc.unwrap() if doc is not None else {}
    return parse_config(data, str(path), platform_defaults(sys.platform))


def platform_defaults(platform: str) -> dict[str, Any]:
    """vmconfig/defaults.toml, except that Windows has no libvirt QEMU driver: QEMU runs
    directly there."""
    defaults = dict(vmconfig(DEFAULTS))
    if platform == "win32":
        defaults["backend"] = "qemu"
    return defaults


def save_config(path: Path, cfg: InstanceConfig) -> None:
    """Write every setting of `cfg` to `path` atomically, keeping what the user wrote."""
    doc = _read(path)
    if doc is None:
        doc = tomlkit.document()
        doc.add(tomlkit.comment(_NEW_FILE_HEADER))
    current = doc.unwrap()
    for key, value in to_toml_dict(cfg).items():
        if key in current and setting_matches(cfg, key, current[key]):
            continue  # keeps "4G" as the user wrote it, and its comment
        doc[key] = value
    write_atomic(path, tomlkit.dumps(doc))


def _read(path: Path) -> TOMLDocument | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise _corrupted(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    except OSError as e:
        raise PydError(
            f"cannot read the config file {path}: {e.strerror}",
            hint="check the file's permissions",
        ) from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as e:
        raise _corrupted(path, str(e)) from None


def _corrupted(path: Path, detail: str) -> PydError:
    return PydError(
        f"the config file {path} is corrupted ({detail})",
        hint=f"fix the TOML in {path}, or remove the file to use the default settings",
    )
