import hashlib
import json
import os
from pathlib import Path

import pytest

from pyd.errors import ImageError
from pyd.image.cache import ImageCache
from pyd.image.fetch import PARTIAL_DIR, fetch_image
from pyd.image.transfer import RetryPolicy, TransferError
from tests.unit.rangeserver import Behaviour, serve

FILES = {"vmlinuz": b"k" * 3000, "initrd.img": b"i" * 100, "rootfs.qcow2": os.urandom(400_000)}
ONCE = RetryPolicy(attempts=1)


def _tree(files: dict[str, bytes], recipe: str = "c") -> dict[str, bytes | Path]:
    manifest = {
        "format": 1,
        "version": "trixie-test",
        "arch": "x86_64",
        "suite": "trixie",
        "recipe_hash": recipe * 64,
        "versions": {},
        "files": {
            n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
        },
        "created": "2026-12-03T00:00:00Z",
    }
    return {"manifest.json": json.dumps(manifest).encode(), **files}


def _quiet(name: str, done: int, total: int) -> None:
    """Progress is not what these tests check."""


def _no_sleep(seconds: float) -> None:
    """The backoff is tested in test_image_transfer."""


def test_a_cut_fetch_resumes_on_the_next_run_and_leaves_no_partial(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    behaviour = Behaviour(cut_after=200_000, cuts=1)
    with serve(_tree(FILES), behaviour) as srv:
        behaviour.status["vmlinuz"] = 503  # the network goes down before the last file
        with pytest.raises(TransferError, match="vmlinuz"):
            fetch_image(cache, srv.url, _quiet, policy=ONCE, sleep=_no_sleep)
        partials = tmp_path / "cache" / PARTIAL_DIR
        assert sorted(p.stat().st_size for p in partials.iterdir()) == [100, 400_000]
        assert cache.entries() == []
        sent = srv.stats.body_bytes
        behaviour.status.clear()
        image = fetch_image(cache, srv.url, _quiet, policy=ONCE, sleep=_no_sleep)
    for name, data in FILES.items():
        assert image.file(name).read_bytes() == data
    manifest_bytes = len(_tree(FILES)["manifest.json"])  # type: ignore[arg-type]
    assert srv.stats.body_bytes - sent == manifest_bytes + 3000  # only the missing file came
    assert not partials.exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name != ".lock"] == [image.key]


def test_partial_files_of_another_image_are_cleaned(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    partials = tmp_path / "cache" / PARTIAL_DIR
    partials.mkdir(parents=True)
    (partials / ("0" * 64 + ".part")).write_bytes(b"stale")
    with serve(_tree(FILES)) as srv:
        fetch_image(cache, srv.url, _quiet)
    assert not partials.exists()


def test_a_dead_mirror_is_skipped_for_the_manifest_and_the_files(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    with serve({}) as empty, serve(_tree(FILES)) as good:
        image = fetch_image(cache, empty.url, _quiet, mirrors=[good.url], sleep=_no_sleep)
    assert image.file("rootfs.qcow2").read_bytes() == FILES["rootfs.qcow2"]
    assert image.manifest.source == good.url + "manifest.json"
    assert empty.stats.requests == [("manifest.json", "", 404)]


def test_every_mirror_dead_names_each(tmp_path: Path) -> None:
    with serve({}) as a, serve({}) as b, pytest.raises(ImageError, match="no mirror") as e:
        fetch_image(ImageCache(tmp_path / "cache"), a.url, _quiet, mirrors=[b.url])
    assert a.url in e.value.message
    assert b.url in e.value.message


def test_a_file_served_wrong_by_one_mirror_comes_from_the_next(tmp_path: Path) -> None:
    bad = dict(_tree(FILES))
    bad["initrd.img"] = b"I" * 100
    cache = ImageCache(tmp_path / "cache")
    with serve(bad) as a, serve(_tree(FILES)) as b:
        image = fetch_image(cache, a.url, _quiet, mirrors=[b.url])
    assert image.file("initrd.img").read_bytes() == FILES["initrd.img"]
    assert ("initrd.img", "", 200) in b.stats.requests


def test_two_files_with_one_content_are_both_placed(tmp_path: Path) -> None:
    files = {**FILES, "vmlinux": FILES["vmlinuz"]}
    with serve(_tree(files)) as srv:
        image = fetch_image(ImageCache(tmp_path / "cache"), srv.url, _quiet)
    assert image.file("vmlinux").read_bytes() == image.file("vmlinuz").read_bytes()
