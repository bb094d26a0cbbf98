"""Errors a user can act on: a message, a hint, and the exit code (1 failed, 2 bad input).

Imports nothing else from pyd, so every layer can raise these.
"""

from __future__ import annotations


class PydError(Exception):
    """An expected failure. The CLI prints `message` and `hint`, never a traceback."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PydError):
    """The user's input (arguments, config values) is wrong."""

    exit_code = 2


class ImageError(PydError):
    """The guest image is missing, cannot be built or cannot be fetched."""


class ImageMismatchError(ImageError):
    """A file's size or sha256 differs from its manifest: it is refused and never used."""


class EnvironmentProblem(PydError):
    """Something pyd needs on the host is missing or not running."""
