"""pyd's directories (platformdirs), relocatable the way LIMA_HOME/COLIMA_HOME are.

PYD_HOME moves config and instance state; PYD_CACHE_DIR moves the image cache, which all
instances share.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "pyd"


def home_dir() -> Path:
    """Config and state of every instance."""
    env = os.environ.get("PYD_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    """The image cache."""
    env = os.environ.get("PYD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def images_dir() -> Path:
    return cache_dir() / "images"


def instances_dir() -> Path:
    return home_dir() / "instances"
