"""Writes the seed as an ISO 9660 volume labelled "cidata" (NoCloud style), with Joliet
and Rock Ridge names so the guest sees the exact file names. pycdlib is pure Python, so
macOS and Windows hosts need no genisoimage."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pycdlib

from pyd.instance.seed import SEED_LABEL


def write_seed_iso(files: dict[str, bytes], dest: Path) -> None:
    """Writes atomically with mode 0600: the seed holds the guest's private host key."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    dirs: set[str] = set()
    for name in sorted(files):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in dirs:
                dirs.add(d)
                iso.add_directory(
                    _iso_name(d, directory=True), rr_name=parts[depth - 1], joliet_path="/" + d
                )
        data = files[name]
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            _iso_name(name),
            rr_name=parts[-1],
            joliet_path="/" + name,
        )
    tmp = dest.with_name(dest.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        iso.write_fp(out)
    iso.close()
    os.replace(tmp, dest)


def _iso_name(path: str, directory: bool = False) -> str:
    """An ISO 9660 level-3 identifier for `path`: upper case, [A-Z0-9_], ';1' on files."""
    out = []
    for part in path.split("/"):
        clean = "".join(c if c.isalnum() else "_" for c in part.upper())
        out.append(clean)
    return "/" + "/".join(out) + ("" if directory else ";1")
