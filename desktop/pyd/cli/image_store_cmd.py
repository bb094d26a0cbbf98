"""`pyd image export|import|prune`: images kept offline and the cache kept lean."""

from __future__ import annotations

from pyd.cli.image_cmd import app as image_app  # noqa: F401 (commands register on it)
