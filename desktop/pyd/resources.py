"""Where pyd's shipped data lives: the guest-image recipe and the vmconfig tables.

An installed wheel carries them under pyd/_data; a source checkout has them at the top level.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent.parent


def data_dir(name: str) -> Path:
    """The directory `name` ("guest-image" or "vmconfig"), packaged or from the checkout."""
    for candidate in (_PACKAGE / "_data" / name, _CHECKOUT / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pyd data directory {name!r} is missing from this installation")


def vmconfig(name: str) -> dict[str, Any]:
    """One vmconfig table, e.g. vmconfig("arches") reads vmconfig/arches.toml."""
    with (data_dir("vmconfig") / f"{name}.toml").open("rb") as f:
        return tomllib.load(f)
