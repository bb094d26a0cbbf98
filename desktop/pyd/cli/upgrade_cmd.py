"""`pyd upgrade`: an instance moved to the newest image, its data kept."""

from __future__ import annotations

from pyd.errors import UsageError


def upgrade() -> None:
    """Move an instance to the newest image, keeping its containers, images and volumes."""
    raise UsageError("`pyd upgrade` is not available yet")
