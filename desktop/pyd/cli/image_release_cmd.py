"""`pyd image publish` and `pyd image pull`: the release tree, written and read."""

from __future__ import annotations

from pyd.cli.image_cmd import app as image_app  # noqa: F401 (commands register on it)
