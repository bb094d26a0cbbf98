import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.fetch import PARTIAL_DIR
from pyd.image.index import ImageIndex, entry_for, parse_index, render_index
from pyd.image.manifest import parse_manifest
from pyd.image.pull import (
    STORED_INDEX,
    STORED_META,
    IndexUnreachable,
    PullProgress,
    cached_newest,
    line_progress,
    pull_newest,
    stored_index_meta,
)
from pyd.image.signing import SignatureError, sign
from pyd.image.transfer import RetryPolicy
from tests.unit.rangeserver import RangeServer, serve

KEY = Ed25519PrivateKey.generate()
KEYS = [("test.pem", KEY.public_key())]
ONCE = RetryPolicy(attempts=2, first_delay=0)
OLD, NEW = "a" * 64, "b" * 64


def image_files(seed: bytes = b"") -> dict[str, bytes]:
    return {
        "vmlinuz": b"k" * 3000 + seed,
        "initrd.img": b"i" * 100 + seed,
        "rootfs.qcow2": os.urandom(50_000),
    }


def manifest_bytes(files: dict[str, bytes], recipe: str, created: str, arch: str) -> bytes:
    manifest = {
        "format": 1,
        "version": f"trixie-{recipe[:12]}",
        "arch": arch,
        "suite": "trixie",
        "recipe_hash": recipe,
        "versions": {"docker": "26.1.5"},
        "files": {
            n: {"size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()
        },
        "created": created,
    }
    return json.dumps(manifest, indent=2).encode()


def release_tree(
    images: list[tuple[dict[str, bytes], str, str]],
    key: Ed25519PrivateKey | None = KEY,
    arch: str = "x86_64",
) -> dict[str, bytes | Path]:
    """A release tree as `pyd image publish` lays it out (plain files): index.json, its
    signature (unless `key` is None) and ARCH-HASH/{manifest.json,files} per image of
    (files, recipe hash, created)."""
    tree: dict[str, bytes | Path] = {}
    entries = []
    for files, recipe, created in images:
        folder = image_key(arch, recipe)
        data = manifest_bytes(files, recipe, created, arch)
        tree[f"{folder}/manifest.json"] = data
        tree.update({f"{folder}/{n}": d for n, d in files.items()})
        entries.append(entry_for(parse_manifest(data.decode()), data, f"{folder}/manifest.json"))
    index = render_index(ImageIndex(tuple(entries)))
    tree["index.json"] = index
    if key is not None:
        tree["index.json.sig"] = sign(index, key)
    return tree


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.files: set[str] = set()

    def progress(self) -> PullProgress:
        return PullProgress(self.lines.append, lambda name, done, total: self.files.add(name))


def _no_sleep(seconds: float) -> None:
    """The backoff is test_image_transfer's."""


def pull(
    cache: ImageCache, srv: RangeServer, lines: Lines | None = None, *, insecure: bool = False
) -> CachedImage:
    return pull_newest(
        cache,
        "x86_64",
        [srv.url + "index.json"],
        KEYS,
        (lines or Lines()).progress(),
        insecure=insecure,
        policy=ONCE,
        sleep=_no_sleep,
    )


def nothing_kept(cache: ImageCache) -> bool:
    """No image, no staging directory, no partial file; the lock and a verified index may
    stay."""
    if not cache.root.exists():
        return True
    left = {p.name for p in cache.root.iterdir()} - {".lock", ".index.json", ".index.json.sig"}
    return left - {STORED_META} == set()


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache")


@pytest.fixture
def files() -> Iterator[dict[str, bytes]]:
    yield image_files()


def test_a_signed_index_is_pulled_verified_and_kept_for_offline_checks(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    lines = Lines()
    with serve(release_tree([(files, OLD, "2026-12-01T00:00:00Z")])) as srv:
        image = pull(cache, srv, lines)
    assert image.key == image_key("x86_64", OLD)
    for name, data in files.items():
        assert image.file(name).read_bytes() == data
    assert image.manifest.source == srv.url + f"{image.key}/manifest.json"
    assert any("signed by ed25519:" in line for line in lines.lines)
    assert lines.files == set(files)
    assert stored_index_meta(cache)["url"] == srv.url + "index.json"
    entry = cached_newest(cache, "x86_64", KEYS)  # the server is gone: no network
    assert entry is not None and entry.recipe_hash == OLD
    assert cached_newest(cache, "aarch64", KEYS) is None
    assert not (cache.root / PARTIAL_DIR).exists()


def test_an_image_already_in_the_cache_is_not_downloaded_again(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    with serve(tree) as srv:
        first = pull(cache, srv)
        lines = Lines()
        again = pull(cache, srv, lines)
    assert again.key == first.key
    assert [r[0] for r in srv.stats.requests].count(f"{first.key}/vmlinuz") == 1
    assert "already the newest" in lines.lines[-1]


def test_the_newest_image_is_picked_by_date_not_by_place(cache: ImageCache) -> None:
    newer, older = image_files(b"new"), image_files(b"old")
    tree = release_tree(
        [(newer, NEW, "2026-12-02T00:00:00Z"), (older, OLD, "2026-12-01T23:00:00Z")]
    )
    with serve(tree) as srv:
        image = pull(cache, srv)
    assert image.manifest.recipe_hash == NEW
    assert image.file("vmlinuz").read_bytes() == newer["vmlinuz"]


def test_an_unsigned_index_is_refused_and_nothing_is_kept(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")], key=None)
    with serve(tree) as srv, pytest.raises(SignatureError, match="has no signature") as e:
        pull(cache, srv)
    assert "--insecure" in e.value.hint
    assert not cache.root.exists() or list(cache.root.iterdir()) == []


def test_insecure_accepts_an_unsigned_index_says_so_and_does_not_keep_it(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    lines = Lines()
    with serve(release_tree([(files, OLD, "2026-12-01T00:00:00Z")], key=None)) as srv:
        image = pull(cache, srv, lines, insecure=True)
    assert image.file("rootfs.qcow2").read_bytes() == files["rootfs.qcow2"]
    assert lines.lines[0].startswith("WARNING: INSECURE:")
    assert not (cache.root / STORED_INDEX).exists()
    assert cached_newest(cache, "x86_64", KEYS) is None


def test_an_index_signed_by_another_key_is_refused(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")], key=Ed25519PrivateKey.generate())
    with serve(tree) as srv, pytest.raises(SignatureError, match="not signed by a trusted key"):
        pull(cache, srv)
    assert not cache.root.exists() or list(cache.root.iterdir()) == []


def test_an_index_changed_after_signing_is_refused(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    index = tree["index.json"]
    assert isinstance(index, bytes)
    tree["index.json"] = index.replace(b'"download_size": ', b'"download_size": 1')
    with serve(tree) as srv, pytest.raises(SignatureError, match="changed since it was signed"):
        pull(cache, srv)
    assert not cache.root.exists() or list(cache.root.iterdir()) == []


def test_a_manifest_that_does_not_match_the_index_is_refused(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    folder = image_key("x86_64", OLD)
    other = dict(files, vmlinuz=b"evil kernel")
    tree[f"{folder}/manifest.json"] = manifest_bytes(other, OLD, "2026-12-01T00:00:00Z", "x86_64")
    tree[f"{folder}/vmlinuz"] = b"evil kernel"
    with serve(tree) as srv, pytest.raises(ImageMismatchError, match="does not match the index"):
        pull(cache, srv)
    assert cache.entries() == [] and nothing_kept(cache)
    assert not any(r[0].endswith("vmlinuz") for r in srv.stats.requests)


def test_a_signed_index_naming_a_manifest_outside_its_tree_is_refused(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    index = tree["index.json"]
    assert isinstance(index, bytes)
    folder = image_key("x86_64", OLD)
    evil = index.replace(f"{folder}/manifest.json".encode(), b"../x/manifest.json")
    tree["index.json"], tree["index.json.sig"] = evil, sign(evil, KEY)  # the signer is fooled
    with serve(tree) as srv, pytest.raises(ImageError, match="outside its directory"):
        pull(cache, srv)
    assert cache.entries() == [] and nothing_kept(cache)
    assert [r[0] for r in srv.stats.requests] == ["index.json", "index.json.sig"]


def test_a_manifest_naming_a_file_outside_the_image_is_refused(cache: ImageCache) -> None:
    files = image_files()
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    folder = image_key("x86_64", OLD)
    evil = manifest_bytes({**files, "../x": b"escape"}, OLD, "2026-12-01T00:00:00Z", "x86_64")
    tree[f"{folder}/manifest.json"] = evil
    (entry,) = parse_index(tree["index.json"]).images  # type: ignore[arg-type]
    fooled = replace(
        entry, manifest_size=len(evil), manifest_sha256=hashlib.sha256(evil).hexdigest()
    )
    index = render_index(ImageIndex((fooled,)))  # the signer signed what it was given
    tree["index.json"], tree["index.json.sig"] = index, sign(index, KEY)
    with (
        serve(tree) as srv,
        pytest.raises(ImageError, match=re.escape("file name '../x' is not allowed")),
    ):
        pull(cache, srv)
    assert cache.entries() == [] and nothing_kept(cache)
    assert not (cache.root.parent / "x").exists()


def test_a_flipped_byte_in_a_file_refuses_the_image_and_keeps_nothing(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    path = f"{image_key('x86_64', OLD)}/rootfs.qcow2"
    data = bytearray(files["rootfs.qcow2"])
    data[len(data) // 2] ^= 1
    tree[path] = bytes(data)
    with serve(tree) as srv, pytest.raises(ImageMismatchError, match=r"rootfs\.qcow2"):
        pull(cache, srv)
    assert cache.entries() == [] and nothing_kept(cache)
    assert not (cache.root / PARTIAL_DIR).exists()


def test_a_dead_first_mirror_is_skipped(cache: ImageCache, files: dict[str, bytes]) -> None:
    with serve({}) as dead, serve(release_tree([(files, OLD, "2026-12-01T00:00:00Z")])) as good:
        image = pull_newest(
            cache,
            "x86_64",
            [dead.url + "index.json", good.url + "index.json"],
            KEYS,
            Lines().progress(),
            policy=ONCE,
            sleep=_no_sleep,
        )
    assert image.file("vmlinuz").read_bytes() == files["vmlinuz"]
    assert dead.stats.requests == [("index.json", "", 404)]


def test_an_index_url_naming_its_directory_reads_index_json_there(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    nested = {f"rel/{k}": v for k, v in tree.items()}
    with serve(tree) as top, serve(nested) as srv:
        for url in (top.url, top.url[:-1], srv.url + "rel", srv.url + "rel/"):
            lines = Lines()
            image = pull_newest(cache, "x86_64", [url], KEYS, lines.progress(), policy=ONCE)
            assert image.file("vmlinuz").read_bytes() == files["vmlinuz"]
            assert any("signed by" in line for line in lines.lines), lines.lines
    assert stored_index_meta(cache)["url"] == srv.url + "rel/index.json"


def test_no_mirror_answering_names_each_url(cache: ImageCache) -> None:
    with serve({}) as a, serve({}) as b:
        urls = [a.url + "index.json", b.url + "index.json"]
        with pytest.raises(IndexUnreachable) as e:
            pull_newest(cache, "x86_64", urls, KEYS, Lines().progress())
    assert all(u in e.value.message for u in urls)


def test_an_index_without_the_arch_names_the_arches_it_has(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")], arch="aarch64")
    with (
        serve(tree) as srv,
        pytest.raises(ImageError, match=r"no x86_64 image \(only aarch64\)") as e,
    ):
        pull(cache, srv)
    assert srv.url + "index.json" in e.value.message


def test_pull_reads_an_index_at_a_file_url(cache: ImageCache, tmp_path: Path) -> None:
    files = image_files()
    root = tmp_path / "unpacked"
    for name, data in release_tree([(files, OLD, "2026-12-01T00:00:00Z")]).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data if isinstance(data, bytes) else data.read_bytes())
    url = (root / "index.json").as_uri()
    image = pull_newest(cache, "x86_64", [url], KEYS, Lines().progress(), remember=False)
    assert image.file("rootfs.qcow2").read_bytes() == files["rootfs.qcow2"]
    assert not (cache.root / STORED_INDEX).exists()
    (root / "index.json.sig").unlink()  # a file:// tree without a signature is unsigned
    with pytest.raises(SignatureError, match="has no signature"):
        pull_newest(cache, "x86_64", [url], KEYS, Lines().progress())


def test_cached_newest_ignores_a_tampered_or_untrusted_stored_index(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    with serve(release_tree([(files, OLD, "2026-12-01T00:00:00Z")])) as srv:
        pull(cache, srv)
    assert cached_newest(cache, "x86_64", KEYS) is not None
    assert (
        cached_newest(cache, "x86_64", [("other", Ed25519PrivateKey.generate().public_key())])
        is None
    )
    stored = cache.root / STORED_INDEX
    stored.write_bytes(stored.read_bytes().replace(OLD.encode(), NEW.encode()))
    assert cached_newest(cache, "x86_64", KEYS) is None


def test_cached_newest_without_a_stored_index_is_none(cache: ImageCache) -> None:
    assert cached_newest(cache, "x86_64", KEYS) is None


def test_line_progress_reports_every_interval_after_the_start_and_once_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([0.0, 0.5, 1.0, 2.5, 3.0, 3.1, 3.2])
    monkeypatch.setattr("pyd.image.pull.time.monotonic", lambda: next(clock))
    lines: list[str] = []
    report = line_progress(lines.append, every=2.0)
    for done in (0, 10_000_000, 20_000_000, 30_000_000, 40_000_000, 40_000_000, 40_000_000):
        report("vmlinux", done, 40_000_000)
    assert len(lines) == 2  # at 2.5 s (2 s after the start), and at the end (once)
    assert lines[0].startswith("vmlinux: 30.0/40.0 MB, 12.0 MB/s")
    assert lines[1].startswith("vmlinux: 40.0/40.0 MB")


def test_a_manifest_is_matched_to_the_index_before_it_is_parsed(
    cache: ImageCache, files: dict[str, bytes]
) -> None:
    tree = release_tree([(files, OLD, "2026-12-01T00:00:00Z")])
    tree[f"{image_key('x86_64', OLD)}/manifest.json"] = b"\xff not json"
    with serve(tree) as srv, pytest.raises(ImageMismatchError, match="does not match the index"):
        pull(cache, srv)
    assert cache.entries() == [] and nothing_kept(cache)


def test_an_older_index_from_the_same_urls_is_refused_as_stale_or_replayed(
    tmp_path: Path,
) -> None:
    cache = ImageCache(tmp_path / "images")
    older = release_tree([(image_files(), OLD, "2026-12-01T00:00:00Z")])
    newer = release_tree([(image_files(b"n"), NEW, "2026-12-02T00:00:00Z")])
    with serve(newer) as srv:
        assert pull(cache, srv).key == image_key("x86_64", NEW)
        srv.files.clear()
        srv.files.update(older)  # the same URL now serves the older, validly signed index
        with pytest.raises(ImageError, match="stale or replayed") as e:
            pull(cache, srv)
    assert "2026-12-02" in e.value.message and e.value.hint
    assert image_key("x86_64", OLD) not in {p.name for p in cache.root.iterdir()}
    seen = cached_newest(cache, "x86_64", KEYS)
    assert seen is not None and seen.recipe_hash == NEW  # the newer index is still the one kept


def test_an_older_index_of_another_source_is_not_compared(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "images")
    with serve(release_tree([(image_files(b"n"), NEW, "2026-12-02T00:00:00Z")])) as srv:
        pull(cache, srv)
    with serve(release_tree([(image_files(), OLD, "2026-12-01T00:00:00Z")])) as other:
        assert pull(cache, other).key == image_key("x86_64", OLD)
