"""Replacing a file so readers see the old or the new one, never half of one."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def write_atomic(path: Path, text: str, new_mode: int = 0o600) -> None:
    """Keeps an existing file's mode (`new_mode` for a new one: the owner's alone unless
    the caller says otherwise); a symlinked file (dotfiles) stays a link and its target is
    replaced."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_mode
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        _replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _replace(src: str, dst: Path) -> None:
    """os.replace; on Windows a reader holding `dst` open makes it fail for a moment."""
    for _ in range(50):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if sys.platform != "win32":
                raise
            time.sleep(0.02)
    os.replace(src, dst)
