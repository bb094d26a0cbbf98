import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.cache import ImageCache
from pyd.image.fetch import fetch_image
from tests.httpserve import serve_directory


def _publish(root: Path, files: dict[str, bytes], **overrides: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        entries[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": 1,
        "version": "trixie-test",
        "arch": "x86_64",
        "suite": "trixie",
        "recipe_hash": "c" * 64,
        "versions": {"docker": "26.1.5"},
        "files": entries,
        "created": "2026-11-29T00:00:00Z",
        **overrides,
    }
    (root / "manifest.json").write_text(json.dumps(manifest))


FILES = {"vmlinuz": b"k" * 3000, "initrd.img": b"i" * 100, "rootfs.qcow2": os.urandom(200_000)}


def _no_progress(name: str, done: int, total: int) -> None:
    """Progress reporting is not what these tests check."""


def test_fetch_accepts_a_good_copy_and_records_its_source(tmp_path: Path) -> None:
    _publish(tmp_path / "srv", FILES)
    cache = ImageCache(tmp_path / "cache")
    with serve_directory(tmp_path / "srv") as url:
        image = fetch_image(cache, url, _no_progress)
    assert image.manifest.source == url + "manifest.json"
    for name, data in FILES.items():
        assert image.file(name).read_bytes() == data
    assert [e.key for e in cache.entries()] == [image.key]


def test_fetch_refuses_a_copy_with_one_flipped_byte_and_keeps_nothing(tmp_path: Path) -> None:
    _publish(tmp_path / "srv", FILES)
    rootfs = tmp_path / "srv" / "rootfs.qcow2"
    data = bytearray(rootfs.read_bytes())
    data[12345] ^= 0x01
    rootfs.write_bytes(bytes(data))
    cache = ImageCache(tmp_path / "cache")
    with (
        serve_directory(tmp_path / "srv") as url,
        pytest.raises(ImageMismatchError, match=r"rootfs\.qcow2 .* does not match its manifest"),
    ):
        fetch_image(cache, url + "manifest.json", _no_progress)
    assert cache.entries() == []
    assert not any(p.name.endswith((".qcow2", ".part")) for p in (tmp_path / "cache").rglob("*"))


def test_fetch_refuses_a_file_longer_than_promised(tmp_path: Path) -> None:
    _publish(tmp_path / "srv", FILES)
    with (tmp_path / "srv" / "initrd.img").open("ab") as f:
        f.write(b"extra")
    cache = ImageCache(tmp_path / "cache")
    with serve_directory(tmp_path / "srv") as url, pytest.raises(ImageMismatchError):
        fetch_image(cache, url, _no_progress)
    assert cache.entries() == []


def test_fetch_refuses_a_manifest_naming_paths_outside_the_image(tmp_path: Path) -> None:
    _publish(tmp_path / "srv", {**FILES, "../escape": b"x"})
    with serve_directory(tmp_path / "srv") as url, pytest.raises(ImageError, match="not allowed"):
        fetch_image(ImageCache(tmp_path / "cache"), url, _no_progress)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("arch", "../../../../x", "arch '../../../../x' is not an architecture name"),
        ("recipe_hash", "/../../../x" + "0" * 53, "recipe_hash '/../../../x0"),
    ],
)
def test_fetch_refuses_an_arch_or_recipe_hash_that_names_a_path(
    tmp_path: Path, field: str, value: str, message: str
) -> None:
    # The cache directory is ARCH-HASH16: either one could lead it out of the cache.
    _publish(tmp_path / "srv", FILES, **{field: value})
    (tmp_path / "cache" / "a" / "b" / "c").mkdir(parents=True)
    cache = ImageCache(tmp_path / "cache" / "a" / "b" / "c")
    with serve_directory(tmp_path / "srv") as url, pytest.raises(ImageError, match=message):
        fetch_image(cache, url, _no_progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "srv"]
    assert cache.entries() == []


def test_the_cache_refuses_an_image_name_that_is_not_one_plain_name(tmp_path: Path) -> None:
    from pyd.image.cache import image_key
    from pyd.image.manifest import parse_manifest

    _publish(tmp_path / "srv", FILES)
    manifest = parse_manifest((tmp_path / "srv" / "manifest.json").read_text())
    cache = ImageCache(tmp_path / "cache")
    for key in ("../x", "a/b", ".hidden", "", "x\n"):
        with cache.staging() as staging, pytest.raises(ImageError, match="not an image name"):
            cache.commit(staging, key, manifest)
    with pytest.raises(ImageError, match="not an image name"):
        image_key("../..", "c" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "srv"]
    assert cache.entries() == []


def test_fetch_reports_missing_files_and_dead_servers(tmp_path: Path) -> None:
    _publish(tmp_path / "srv", FILES)
    (tmp_path / "srv" / "vmlinuz").unlink()
    cache = ImageCache(tmp_path / "cache")
    with serve_directory(tmp_path / "srv") as url, pytest.raises(ImageError, match="404"):
        fetch_image(cache, url, _no_progress)
    with pytest.raises(ImageError, match="cannot reach"):
        fetch_image(cache, "http://127.0.0.1:9/", _no_progress)


def test_fetching_an_image_already_cached_keeps_the_cached_files(tmp_path: Path) -> None:
    _publish(tmp_path / "srv", FILES)
    cache = ImageCache(tmp_path / "cache")
    with serve_directory(tmp_path / "srv") as url:
        first = fetch_image(cache, url, _no_progress)
        inode = first.file("rootfs.qcow2").stat().st_ino
        again = fetch_image(cache, url, _no_progress)
    assert again.key == first.key
    assert again.file("rootfs.qcow2").stat().st_ino == inode


def test_a_fetch_that_waited_for_the_lock_takes_the_image_another_fetch_committed(
    tmp_path: Path,
) -> None:
    _publish(tmp_path / "srv", FILES)

    class Raced(ImageCache):
        """Another pull of the same image commits it while this one waits for the lock."""

        @contextlib.contextmanager
        def locked(self) -> Iterator[None]:
            fetch_image(ImageCache(self.root), url, _no_progress)
            with super().locked():
                yield

    with serve_directory(tmp_path / "srv") as url:
        image = fetch_image(Raced(tmp_path / "cache"), url, _no_progress)
    assert [e.key for e in ImageCache(tmp_path / "cache").entries()] == [image.key]
    assert image.file("rootfs.qcow2").read_bytes() == FILES["rootfs.qcow2"]
    # Committing it once more is refused, and the hint does not say to remove an image
    # instances may use as their base.
    cache = ImageCache(tmp_path / "cache")
    with cache.staging() as staging, pytest.raises(ImageError, match="already in") as e:
        cache.commit(staging, image.key, image.manifest)
    assert "remove" not in e.value.hint and "never replaced" in e.value.hint
