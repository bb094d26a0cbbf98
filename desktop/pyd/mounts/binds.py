"""Which running containers use a share: pure, from the engine's container list."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any


def under(path: str, mount_point: str) -> bool:
    """Whether guest `path` is `mount_point` or inside it."""
    path, mount_point = posixpath.normpath(path), posixpath.normpath(mount_point)
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def binds_on(
    containers: Iterable[Mapping[str, Any]], mount_points: Iterable[str]
) -> list[tuple[str, str, str]]:
    """(container name, bind source, mount point) for each bind mount of a running container
    (`GET /containers/json` items: "Names", "State", "Mounts") whose source lies in one of
    `mount_points`."""
    points = list(mount_points)
    found = []
    for c in containers:
        if c.get("State", "running") != "running":
            continue
        names = c.get("Names") or [c.get("Id", "?")[:12]]
        name = str(names[0]).lstrip("/")
        for m in c.get("Mounts") or ():
            if m.get("Type") != "bind":
                continue
            source = str(m.get("Source", ""))
            point = next((p for p in points if under(source, p)), None)
            if point is not None:
                found.append((name, source, point))
    return found
