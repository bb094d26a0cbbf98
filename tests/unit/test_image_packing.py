import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import zstandard

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.cache import ImageCache
from pyd.image.fetch import PARTIAL_DIR, fetch_files
from pyd.image.manifest import FileEntry, Manifest, Packed, parse_manifest
from pyd.image.packing import Unpacker, pack, unpack
from pyd.image.transfer import RetryPolicy, SinkRefused, TransferError
from tests.unit.rangeserver import Behaviour, serve

SHA = "a" * 64
# Compressible, with some noise so zstd has work to do.
ROOTFS = (b"ext4 block " * 30_000) + os.urandom(50_000) + bytes(200_000)


def _manifest(**files: FileEntry) -> Manifest:
    base = {n: FileEntry(1, SHA) for n in ("vmlinuz", "initrd.img", "rootfs.qcow2")}
    return Manifest(
        version="v",
        arch="x86_64",
        suite="trixie",
        recipe_hash="c" * 64,
        versions={},
        files={**base, **files},
        created="2026-12-03T00:00:00Z",
    )


def _entry(data: bytes, packed: Packed | None = None) -> FileEntry:
    return FileEntry(len(data), hashlib.sha256(data).hexdigest(), packed)


def _packed(tmp_path: Path, data: bytes, name: str = "rootfs.qcow2") -> tuple[Path, FileEntry]:
    src = tmp_path / name
    src.write_bytes(data)
    packed = pack(src, tmp_path / f"{name}.zst", level=3)
    return tmp_path / packed.name, _entry(data, packed)


def test_a_manifest_without_packed_files_renders_as_before() -> None:
    text = _manifest().to_json()
    assert '"packed"' not in text
    assert json.loads(text)["files"]["vmlinuz"] == {"size": 1, "sha256": SHA}
    assert parse_manifest(text).to_json() == text


def test_a_packed_entry_round_trips() -> None:
    packed = Packed("zstd", "rootfs.qcow2.zst", 7, "b" * 64)
    m = _manifest(**{"rootfs.qcow2": FileEntry(10, SHA, packed)})
    again = parse_manifest(m.to_json())
    assert again == m
    assert again.files["rootfs.qcow2"].packed == packed
    assert again.download_size == 1 + 1 + 7 and again.total_size == 12


@pytest.mark.parametrize(
    ("packed", "problem"),
    [
        ({"name": "../x.zst"}, "packed name '../x.zst' is not allowed"),
        ({"name": "vmlinuz"}, "packed name 'vmlinuz' is taken"),
        ({"name": "manifest.json"}, "packed name 'manifest.json' is taken"),
        ({"encoding": "xz"}, "encoding 'xz' is not one of zstd"),
        ({"sha256": "nope"}, "packed sha256 'nope' is not a sha256"),
        ({"size": -1}, "negative packed size"),
        ({"size": "12"}, "malformed"),
    ],
)
def test_a_bad_packed_entry_is_refused(packed: dict[str, object], problem: str) -> None:
    data = json.loads(_manifest().to_json())
    data["files"]["rootfs.qcow2"]["packed"] = {
        "encoding": "zstd",
        "name": "rootfs.qcow2.zst",
        "size": 5,
        "sha256": "b" * 64,
        **packed,
    }
    with pytest.raises(ImageError, match=problem):
        parse_manifest(json.dumps(data))


def test_two_files_cannot_share_a_packed_name() -> None:
    data = json.loads(_manifest().to_json())
    for name in ("rootfs.qcow2", "vmlinuz"):
        data["files"][name]["packed"] = {
            "encoding": "zstd",
            "name": "same.zst",
            "size": 5,
            "sha256": "b" * 64,
        }
    with pytest.raises(ImageError, match=r"'same\.zst' is taken"):
        parse_manifest(json.dumps(data))


def test_pack_then_unpack_gives_the_file_back(tmp_path: Path) -> None:
    packed, entry = _packed(tmp_path, ROOTFS)
    assert entry.packed and entry.packed.size == packed.stat().st_size < len(ROOTFS) // 2
    assert entry.packed.sha256 == hashlib.sha256(packed.read_bytes()).hexdigest()
    unpack(packed, tmp_path / "out", entry)
    assert (tmp_path / "out").read_bytes() == ROOTFS


def test_unpack_refuses_a_flipped_byte_in_the_packed_file(tmp_path: Path) -> None:
    packed, entry = _packed(tmp_path, ROOTFS)
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0x40
    packed.write_bytes(data)
    with pytest.raises(ImageMismatchError, match=r"rootfs\.qcow2 does not match"):
        unpack(packed, tmp_path / "out", entry, name="rootfs.qcow2")
    assert not (tmp_path / "out").exists()


def test_unpack_refuses_a_file_whose_unpacked_digest_differs(tmp_path: Path) -> None:
    packed, entry = _packed(tmp_path, ROOTFS)
    with pytest.raises(ImageMismatchError, match="unpacks to sha256"):
        unpack(packed, tmp_path / "out", replace(entry, sha256=SHA))
    assert not (tmp_path / "out").exists()


def test_unpack_stops_a_bomb_at_the_manifest_size(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zst"
    # 64 MB of zeros in a few KB, with no size in the frame header to give it away.
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    with bomb.open("wb") as f, cctx.stream_writer(f, closefd=False) as z:
        for _ in range(64):
            z.write(bytes(1 << 20))
    assert bomb.stat().st_size < 100_000
    entry = FileEntry(1_000_000, SHA, Packed("zstd", "bomb.zst", bomb.stat().st_size, SHA))
    with pytest.raises(ImageMismatchError, match="more than 1000000 bytes"):
        unpack(bomb, tmp_path / "out", entry)
    assert not (tmp_path / "out").exists()


def test_unpack_refuses_a_file_that_is_short(tmp_path: Path) -> None:
    packed, entry = _packed(tmp_path, ROOTFS)
    with pytest.raises(ImageMismatchError, match=r"unpacks to \d+ bytes, the manifest says"):
        unpack(packed, tmp_path / "out", replace(entry, size=len(ROOTFS) + 1))


def _tree(tmp_path: Path) -> tuple[Manifest, dict[str, bytes | Path]]:
    """A release directory: rootfs.qcow2 and vmlinuz packed, initrd.img plain."""
    tmp_path.mkdir()
    files = {"vmlinuz": b"kernel " * 5000, "initrd.img": b"i" * 100, "rootfs.qcow2": ROOTFS}
    entries, served = {}, {}
    for name, data in files.items():
        if name == "initrd.img":
            entries[name] = _entry(data)
            served[name] = data
            continue
        packed, entries[name] = _packed(tmp_path, data, name)
        served[packed.name] = packed.read_bytes()
    manifest = replace(_manifest(), files=entries)
    return manifest, {"manifest.json": manifest.to_json().encode(), **served}


def _quiet(name: str, done: int, total: int) -> None:
    """Progress is checked in test_fetch_files_of_a_packed_tree_counts_packed_bytes."""


def _no_sleep(seconds: float) -> None:
    """The backoff is tested in test_image_transfer."""


@pytest.mark.parametrize("ranges", [True, False])
def test_fetch_files_of_a_packed_tree_resumes_cuts_and_verifies(
    tmp_path: Path, ranges: bool
) -> None:
    manifest, tree = _tree(tmp_path / "tree")
    cache = ImageCache(tmp_path / "cache")
    behaviour = Behaviour(ranges=ranges, cut_after=3000, cuts=4)
    seen: dict[str, int] = {}

    def progress(name: str, done: int, total: int) -> None:
        seen[name] = total

    with serve(tree, behaviour) as srv:
        image = fetch_files(cache, manifest, [srv.url + "manifest.json"], progress, sleep=_no_sleep)
        ranged = [r for r in srv.stats.requests if r[1]]
        sent = srv.stats.body_bytes
    packed_total = sum(e.transfer_size for e in manifest.files.values())
    if ranges:
        assert ranged, "the cuts were resumed with Range requests"
        assert sent < packed_total + 4 * 3000  # resumed, not sent again from byte 0
    else:
        assert sent == packed_total + 4 * 3000  # each cut file came again from byte 0
    assert image.file("rootfs.qcow2").read_bytes() == ROOTFS
    assert image.file("vmlinuz").read_bytes() == b"kernel " * 5000
    assert seen["rootfs.qcow2"] == manifest.files["rootfs.qcow2"].transfer_size
    assert sorted(p.name for p in image.path.iterdir()) == [
        "initrd.img",
        "manifest.json",
        "rootfs.qcow2",
        "vmlinuz",
    ]
    assert not (tmp_path / "cache" / PARTIAL_DIR).exists()


def test_a_packed_file_is_unpacked_into_staging_while_it_downloads(tmp_path: Path) -> None:
    manifest, tree = _tree(tmp_path / "tree")
    cache = ImageCache(tmp_path / "cache")
    outputs: list[list[Path]] = []

    def progress(name: str, done: int, total: int) -> None:
        if name == "rootfs.qcow2" and done == total:  # the last packed byte is in
            outputs.append(list((tmp_path / "cache").glob("*/rootfs.qcow2")))

    with serve(tree) as srv:
        image = fetch_files(cache, manifest, [srv.url], progress, sleep=_no_sleep)
    [[output]] = outputs
    assert output.parent.name.startswith(".staging")  # never in the cache unverified
    assert image.file("rootfs.qcow2").read_bytes() == ROOTFS


def test_a_packed_partial_of_an_earlier_run_is_resumed_and_unpacked(tmp_path: Path) -> None:
    manifest, tree = _tree(tmp_path / "tree")
    rootfs = manifest.files["rootfs.qcow2"]
    assert rootfs.packed
    packed = tree["rootfs.qcow2.zst"]
    assert isinstance(packed, bytes)
    partials = tmp_path / "cache" / PARTIAL_DIR
    partials.mkdir(parents=True)
    (partials / f"{rootfs.packed.sha256}.part").write_bytes(packed[: len(packed) // 2])
    cache = ImageCache(tmp_path / "cache")
    with serve(tree) as srv:
        image = fetch_files(cache, manifest, [srv.url], _quiet, sleep=_no_sleep)
        assert ("rootfs.qcow2.zst", f"bytes={len(packed) // 2}-", 206) in srv.stats.requests
        others = sum(e.transfer_size for n, e in manifest.files.items() if n != "rootfs.qcow2")
        assert srv.stats.body_bytes == others + len(packed) - len(packed) // 2
    assert image.file("rootfs.qcow2").read_bytes() == ROOTFS
    assert not partials.exists()


def test_a_bomb_fetched_is_refused_at_the_cap(tmp_path: Path) -> None:
    cctx = zstandard.ZstdCompressor(write_content_size=False)
    bomb = cctx.compress(bytes(64 << 20))  # 64 MB of zeros in a few KB, no size in its header
    packed = Packed("zstd", "rootfs.qcow2.zst", len(bomb), hashlib.sha256(bomb).hexdigest())
    manifest = _manifest(**{"rootfs.qcow2": FileEntry(1_000_000, SHA, packed)})
    files = {n: FileEntry(1, hashlib.sha256(b"x").hexdigest()) for n in ("vmlinuz", "initrd.img")}
    manifest = replace(manifest, files={**manifest.files, **files})
    tree: dict[str, bytes | Path] = {"rootfs.qcow2.zst": bomb, "vmlinuz": b"x", "initrd.img": b"x"}
    cache = ImageCache(tmp_path / "cache")
    with (
        serve(tree) as srv,
        pytest.raises(ImageMismatchError, match="unpacks to more than 1000000 bytes"),
    ):
        fetch_files(cache, manifest, [srv.url], _quiet, policy=RetryPolicy(2), sleep=_no_sleep)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock"]


def test_an_unpacker_restarted_forgets_what_it_was_fed(tmp_path: Path) -> None:
    packed, entry = _packed(tmp_path, ROOTFS)
    data = packed.read_bytes()
    unpacker = Unpacker(tmp_path / "out", entry)
    try:
        unpacker.feed(b"not zstd at all" * 100)
        with pytest.raises(SinkRefused, match="does not unpack"):
            for _ in range(1000):  # the decoder says so on a later feed
                time.sleep(0.001)
                unpacker.feed(b"more")
        unpacker.restart()
        unpacker.feed(data[:1000])
        unpacker.restart()  # a restart in the middle of a good stream
        for i in range(0, len(data), 4096):
            unpacker.feed(data[i : i + 4096])
        unpacker.finish()
    finally:
        unpacker.close()
    assert (tmp_path / "out").read_bytes() == ROOTFS


def test_a_packed_file_that_unpacks_wrong_refuses_the_image(tmp_path: Path) -> None:
    manifest, tree = _tree(tmp_path / "tree")
    rootfs = manifest.files["rootfs.qcow2"]
    bad = replace(manifest, files={**manifest.files, "rootfs.qcow2": replace(rootfs, sha256=SHA)})
    cache = ImageCache(tmp_path / "cache")
    with (
        serve({**tree, "manifest.json": bad.to_json().encode()}) as srv,
        pytest.raises(ImageMismatchError, match=r"rootfs\.qcow2 does not match"),
    ):
        fetch_files(cache, bad, [srv.url + "manifest.json"], _quiet, policy=RetryPolicy(2))
    assert cache.entries() == []
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock"]


def test_a_flipped_byte_in_a_served_packed_file_is_refused(tmp_path: Path) -> None:
    manifest, tree = _tree(tmp_path / "tree")
    data = bytearray(tree["rootfs.qcow2.zst"])  # type: ignore[arg-type]
    data[100] ^= 1
    cache = ImageCache(tmp_path / "cache")
    with (
        serve({**tree, "rootfs.qcow2.zst": bytes(data)}) as srv,
        pytest.raises(ImageMismatchError, match=r"rootfs\.qcow2\.zst"),
    ):
        fetch_files(cache, manifest, [srv.url], _quiet, policy=RetryPolicy(2), sleep=_no_sleep)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock"]


def test_a_fetch_cut_after_an_unpack_keeps_the_packed_partials_only(tmp_path: Path) -> None:
    manifest, tree = _tree(tmp_path / "tree")
    cache = ImageCache(tmp_path / "cache")
    behaviour = Behaviour(status={"vmlinuz.zst": 503})  # down after rootfs.qcow2 unpacked
    murl = "manifest.json"
    with serve(tree, behaviour) as srv:
        with pytest.raises(TransferError, match=r"vmlinuz\.zst"):
            fetch_files(cache, manifest, [srv.url + murl], _quiet, policy=RetryPolicy(1))
        partials = tmp_path / "cache" / PARTIAL_DIR
        rootfs = manifest.files["rootfs.qcow2"]
        assert rootfs.packed
        assert sorted(p.name for p in partials.iterdir()) == sorted(
            [f"{rootfs.packed.sha256}.part", f"{manifest.files['initrd.img'].sha256}.part"]
        )
        # No unpacked file and no staging directory is left: unpacking starts over.
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
            ".lock",
            PARTIAL_DIR,
        ]
        sent = srv.stats.body_bytes
        behaviour.status.clear()
        image = fetch_files(cache, manifest, [srv.url + murl], _quiet, policy=RetryPolicy(1))
        vmlinuz = manifest.files["vmlinuz"]
        assert srv.stats.body_bytes - sent == vmlinuz.transfer_size  # only the missing one
    assert image.file("rootfs.qcow2").read_bytes() == ROOTFS
    assert not partials.exists()
