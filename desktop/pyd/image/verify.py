"""Checks image files against their manifest (size, then sha256)."""

from __future__ import annotations

from pathlib import Path

from pyd.image.digest import sha256_file
from pyd.image.manifest import FileEntry, Manifest


def file_problem(path: Path, entry: FileEntry) -> str | None:
    """None when `path` matches `entry`, else what is wrong with it."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path.name} is missing"
    if size != entry.size:
        return f"{path.name} is {size} bytes, the manifest says {entry.size}"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"{path.name} has sha256 {digest[:16]}…, the manifest says {entry.sha256[:16]}…"
    return None


def image_problems(directory: Path, manifest: Manifest) -> list[str]:
    problems = []
    for name, entry in sorted(manifest.files.items()):
        problem = file_problem(directory / name, entry)
        if problem:
            problems.append(problem)
    return problems
