"""What `pyd upgrade` must keep, and the newer images it moves to; shared by
tests/e2e/test_upgrade.py and bench/upgrade.py.

Kept: a volume holding a known file, an image built in the guest and a container made from
it. Newer images: the built image's files hard-linked under another key (its manifest with
another recipe hash and a later date), so an upgrade moves to the same bits."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path

from pyd.image.cache import image_key
from pyd.image.manifest import MANIFEST
from tests.e2e.pydcli import PydEnv, build_busybox_image

VOLUME = "keep"
CONTAINER = "kept"
PROOF = "survives-42"


def make_data(env: PydEnv, workdir: Path, tag: str) -> None:
    """The volume with its file, image `tag` (busybox, built in the guest) and a container."""
    build_busybox_image(env, workdir, tag)
    env.docker("volume", "create", VOLUME)
    write = "echo survives-$((6*7)) > /data/proof"
    env.docker("run", "--rm", "-v", f"{VOLUME}:/data", tag, "sh", "-c", write)
    env.docker("create", "--name", CONTAINER, tag, "true")


def data_lost(env: PydEnv, tag: str) -> list[str]:
    """What make_data made that is gone or changed; empty when all of it is there."""
    lost: list[str] = []
    proof = env.docker("run", "--rm", "-v", f"{VOLUME}:/data", tag, "cat", "/data/proof")
    if proof.stdout.strip() != PROOF:
        lost.append(f"the volume's file reads {proof.stdout.strip()!r}")
    containers = env.docker("ps", "-a", "--format", "{{.Names}} {{.Image}}").stdout.split("\n")
    if f"{CONTAINER} {tag}" not in containers:
        lost.append(f"container {CONTAINER} of {tag} is gone (there are {containers})")
    images = env.docker("images", "--format", "{{.Repository}}").stdout.split()
    if tag not in images:
        lost.append(f"image {tag} is gone (there are {images})")
    return lost


def link_tree(src: Path, dest: Path) -> None:
    """Hard links where the filesystem allows (no 330 MB copy), else copies."""
    dest.mkdir(mode=0o700, parents=True)
    for path in src.iterdir():
        try:
            os.link(path, dest / path.name)
        except OSError:
            shutil.copy2(path, dest / path.name)


def newer_copy(src: Path, images: Path, n: int, broken: tuple[str, ...] = ()) -> str:
    """Image `src` under another key (recipe hash n repeated, dated now + n seconds: the
    higher n, the newer); its key. The files named in `broken` are replaced by garbage, their
    digests recomputed: a consistent, if unbootable, image."""
    manifest = json.loads((src / MANIFEST).read_text())
    manifest["recipe_hash"] = f"{n:02x}" * 32
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=n)
    manifest["created"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    key = image_key(manifest["arch"], manifest["recipe_hash"])
    dest = images / key
    dest.mkdir(mode=0o700, parents=True)
    for name in manifest["files"]:
        if name in broken:
            garbage = os.urandom(4096)
            (dest / name).write_bytes(garbage)
            manifest["files"][name] = {
                "size": len(garbage),
                "sha256": hashlib.sha256(garbage).hexdigest(),
            }
        else:
            try:
                os.link(src / name, dest / name)
            except OSError:
                shutil.copy2(src / name, dest / name)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return key
