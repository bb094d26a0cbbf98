"""The guest-image recipe and its hash: the cache key of a built image.

The hash covers every file of guest-image/ (name, exec bit, content) plus the build
parameters, so any change to the recipe makes a new image and an unchanged one is reused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyd.resources import data_dir, vmconfig

# Not part of the recipe: documentation (it does not reach the image, and editing it must
# not cost a rebuild), editor and Python droppings.
_IGNORED = (".md", "__pycache__", ".pyc", "~", ".swp")


@dataclass(frozen=True)
class RecipeFile:
    path: str  # relative, "/"-separated
    executable: bool
    content: bytes


def recipe_hash(files: Iterable[RecipeFile], params: dict[str, str]) -> str:
    """Pure: a sha256 over the files (in path order) and the parameters."""
    h = hashlib.sha256()
    for key in sorted(params):
        h.update(f"param {key}={params[key]}\n".encode())
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"file {f.path} {int(f.executable)} {len(f.content)}\n".encode())
        h.update(f.content)
    return h.hexdigest()


def read_recipe(root: Path) -> list[RecipeFile]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.endswith(_IGNORED) or part in _IGNORED for part in rel.split("/")):
            continue
        if path.is_symlink():
            files.append(RecipeFile(rel, False, b"symlink:" + os.readlink(path).encode()))
        elif path.is_file():
            executable = bool(path.stat().st_mode & 0o111)
            files.append(RecipeFile(rel, executable, path.read_bytes()))
    return files


def recipe_dir() -> Path:
    return data_dir("guest-image")


def default_suite() -> str:
    return str(vmconfig("image")["suite"])
