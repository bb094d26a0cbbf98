"""`pyd image export|import`: an image archive round trip on a small hand-made image, and
every tampered archive refused with nothing left in the cache or next to it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.archive import ArchiveError, export_archive, import_archive, write_archive
from pyd.image.cache import ImageCache, image_key
from pyd.image.index import ImageIndex, entry_for, render_index
from pyd.image.manifest import FileEntry, Manifest
from pyd.image.signing import SignatureError, public_pem, sign
from pyd.image.verify import image_problems

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
KEYS = [KEY.public_key()]
RECIPE = "d" * 64
IMAGE = image_key("x86_64", RECIPE)
FILES = {"vmlinuz": b"k" * 3000, "initrd.img": b"i" * 100, "rootfs.qcow2": os.urandom(50_000)}


def _tree(root: Path, signer: Ed25519PrivateKey | None = KEY) -> Path:
    """A one-image release tree as `pyd image publish` writes it (files not packed)."""
    (root / IMAGE).mkdir(parents=True)
    entries = {}
    for name, data in FILES.items():
        (root / IMAGE / name).write_bytes(data)
        entries[name] = FileEntry(len(data), hashlib.sha256(data).hexdigest())
    manifest = Manifest(
        "trixie-test", "x86_64", "trixie", RECIPE, {"docker": "26"}, entries,
        created="2026-12-01T00:00:00Z",
    )  # fmt: skip
    mbytes = manifest.to_json().encode()
    (root / IMAGE / "manifest.json").write_bytes(mbytes)
    index = render_index(ImageIndex((entry_for(manifest, mbytes, f"{IMAGE}/manifest.json"),)))
    (root / "index.json").write_bytes(index)
    if signer:
        (root / "index.json.sig").write_bytes(sign(index, signer))
    return root


def _archive(tmp: Path, signer: Ed25519PrivateKey | None = KEY) -> Path:
    tree = _tree(tmp / "tree", signer)
    write_archive(tree, tmp / "image.tar")
    return tmp / "image.tar"


def _import(path: Path, cache: ImageCache, insecure: bool = False) -> list[str]:
    lines: list[str] = []
    import_archive(cache, path, KEYS, _quiet, insecure=insecure, info=lines.append)
    return lines


def _quiet(name: str, done: int, total: int) -> None:
    """Progress is not what these tests check."""


def _assert_nothing_kept(cache: ImageCache) -> None:
    assert cache.entries() == []
    kept = [p.name for p in cache.root.iterdir() if p.name != ".lock"]
    assert kept == []
    assert [p.name for p in cache.root.parent.iterdir()] == [cache.root.name]


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache" / "images")


def test_an_archive_imports_and_every_file_matches(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path)
    with tarfile.open(path) as tar:
        assert sorted(tar.getnames()) == sorted(
            ["index.json", "index.json.sig", f"{IMAGE}/manifest.json"]
            + [f"{IMAGE}/{n}" for n in FILES]
        )
    lines = _import(path, cache)
    assert any("signed by ed25519:" in line for line in lines)
    image = cache.get(IMAGE)
    assert image is not None
    assert {n: image.file(n).read_bytes() for n in FILES} == FILES
    assert [p.name for p in cache.root.parent.iterdir()] == [cache.root.name]  # no work dir


def _cached(cache: ImageCache) -> None:
    with cache.staging() as staging:
        for name, data in FILES.items():
            (staging / name).write_bytes(data)
        files = {n: FileEntry(len(d), hashlib.sha256(d).hexdigest()) for n, d in FILES.items()}
        manifest = Manifest(
            "trixie-test", "x86_64", "trixie", RECIPE, {}, files, created="2026-12-01T00:00:00Z"
        )
        cache.commit(staging, IMAGE, manifest)


def test_export_then_import_on_a_fresh_cache(tmp_path: Path, cache: ImageCache) -> None:
    _cached(cache)
    lines: list[str] = []
    index = export_archive(cache, IMAGE, tmp_path / "out.tar", KEY, lines.append)
    assert [e.manifest for e in index.images] == [f"{IMAGE}/manifest.json"]
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["out.tar"]
    with tarfile.open(tmp_path / "out.tar") as tar:
        names = set(tar.getnames())
    assert {"index.json", "index.json.sig", f"{IMAGE}/vmlinuz.zst"} <= names  # packed
    assert f"{IMAGE}/rootfs.qcow2" in names  # random bytes: not worth packing
    fresh = ImageCache(tmp_path / "fresh" / "images")
    _import(tmp_path / "out.tar", fresh)
    image = fresh.get(IMAGE)
    assert image is not None
    assert {n: image.file(n).read_bytes() for n in FILES} == FILES
    assert image_problems(image.path, image.manifest) == []


def test_export_of_an_unknown_key_writes_nothing(tmp_path: Path, cache: ImageCache) -> None:
    with pytest.raises(ImageError, match="no cached image"):
        export_archive(cache, "x86_64-" + "0" * 16, tmp_path / "out.tar", KEY, print)
    assert not (tmp_path / "out.tar").exists()


def _rewrite(path: Path, change: dict[str, bytes | None]) -> None:
    """The archive with members replaced (bytes) or dropped (None)."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m)) for m in tar.getmembers()]
        kept = [(m, f.read() if f else b"") for m, f in members]
    with tarfile.open(path, "w") as tar:
        for m, data in kept:
            if m.name in change:
                if change[m.name] is None:
                    continue
                data = change[m.name] or b""
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))


def test_a_flipped_byte_in_a_file_is_refused(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path)
    bad = bytearray(FILES["rootfs.qcow2"])
    bad[4321] ^= 0x01
    _rewrite(path, {f"{IMAGE}/rootfs.qcow2": bytes(bad)})
    with pytest.raises(ImageMismatchError, match=re.escape("rootfs.qcow2")):
        _import(path, cache)
    _assert_nothing_kept(cache)


def test_a_changed_index_is_refused(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path)
    index = (tmp_path / "tree" / "index.json").read_bytes()
    _rewrite(path, {"index.json": index.replace(b"trixie-test", b"trixie-evil")})
    with pytest.raises(SignatureError, match="not signed by a trusted key"):
        _import(path, cache)
    _assert_nothing_kept(cache)


def test_a_manifest_unlike_the_index_is_refused_before_it_is_parsed(
    tmp_path: Path, cache: ImageCache
) -> None:
    path = _archive(tmp_path)
    _rewrite(path, {f"{IMAGE}/manifest.json": b"[" * 200_000})  # the parser would recurse
    with pytest.raises(ImageMismatchError, match="does not match the index"):
        _import(path, cache)
    _assert_nothing_kept(cache)


def test_another_keys_signature_is_refused(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path, signer=OTHER)
    with pytest.raises(SignatureError):
        _import(path, cache)
    _assert_nothing_kept(cache)


def test_an_unsigned_archive_needs_insecure_and_says_so(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path, signer=None)
    with pytest.raises(SignatureError) as refused:
        _import(path, cache)
    assert "--insecure" in refused.value.hint
    _assert_nothing_kept(cache)
    lines = _import(path, cache, insecure=True)
    assert any(line.startswith("WARNING: INSECURE") for line in lines)
    assert cache.get(IMAGE) is not None


def _add(path: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    info.size = len(data)
    with tarfile.open(path, "a") as tar:
        tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("member", "kind", "message"),
    [
        ("../x", tarfile.REGTYPE, "would leave the image tree"),
        ("/etc/x", tarfile.REGTYPE, "would leave the image tree"),
        (f"{IMAGE}/../../x", tarfile.REGTYPE, "would leave the image tree"),
        (f"{IMAGE}/link", tarfile.SYMTYPE, "is not a regular file (a symlink to '/etc/passwd')"),
        (f"{IMAGE}/hard", tarfile.LNKTYPE, "is not a regular file (a hard link"),
        ("fifo", tarfile.FIFOTYPE, "is not a regular file"),
        ("index.json", tarfile.REGTYPE, "is there twice"),
        ("index.json\n", tarfile.REGTYPE, "would leave the image tree"),
    ],
)
def test_a_bad_member_is_refused_before_anything_is_written(
    tmp_path: Path, cache: ImageCache, member: str, kind: bytes, message: str
) -> None:
    path = _archive(tmp_path)
    info = tarfile.TarInfo(member)
    info.type = kind
    info.linkname = "/etc/passwd"
    _add(path, info, b"{}" if kind == tarfile.REGTYPE else b"")
    with pytest.raises(ArchiveError, match=re.escape(message)):
        _import(path, cache)
    _assert_nothing_kept(cache)
    assert not (tmp_path / "x").exists()


def test_a_manifest_path_leaving_the_tree_is_refused(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path)
    index = json.loads((tmp_path / "tree" / "index.json").read_bytes())
    index["images"][0]["manifest"] = "../../manifest.json"
    data = (json.dumps(index) + "\n").encode()
    _rewrite(path, {"index.json": data, "index.json.sig": sign(data, KEY)})  # re-signed
    with pytest.raises(ImageError, match="outside its directory"):
        _import(path, cache)
    _assert_nothing_kept(cache)


def test_a_truncated_or_foreign_file_is_refused(tmp_path: Path, cache: ImageCache) -> None:
    path = _archive(tmp_path)
    path.write_bytes(path.read_bytes()[:6000])
    with pytest.raises(ArchiveError, match="not a readable image archive"):
        _import(path, cache)
    _assert_nothing_kept(cache)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ArchiveError, match="not a readable image archive"):
        _import(tmp_path / "notes.txt", cache)
    _rewrite(path := _archive(tmp_path / "again"), {"index.json": None, "index.json.sig": None})
    with pytest.raises(ArchiveError, match=re.escape("has no index.json")):
        _import(path, cache)
    _assert_nothing_kept(cache)


def _pyd(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "pub.pem").write_bytes(public_pem(KEY))
    env = {
        **os.environ,
        "PYD_HOME": str(tmp / "home"),
        "PYD_CACHE_DIR": str(tmp / "cli-cache"),
        "PYD_IMAGE_KEY": str(tmp / "pub.pem"),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_import_cli_refuses_unsigned_with_a_hint_and_warns_loudly_when_insecure(
    tmp_path: Path,
) -> None:
    path = _archive(tmp_path, signer=None)
    r = _pyd("image", "import", str(path), tmp=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "has no signature" in r.stderr and "--insecure" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "cli-cache" / "images" / IMAGE).exists()
    r = _pyd("image", "import", "--insecure", str(path), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "WARNING: INSECURE" in r.stderr and f"imported and verified image {IMAGE}" in r.stderr
    assert r.stdout.strip() == str(tmp_path / "cli-cache" / "images" / IMAGE)


def test_import_cli_signed_archive_and_a_path_that_is_no_archive(tmp_path: Path) -> None:
    r = _pyd("image", "import", str(_archive(tmp_path)), tmp=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "signed by ed25519:" in r.stderr and "INSECURE" not in r.stderr
    r = _pyd("image", "import", str(tmp_path / "nope.tar"), tmp=tmp_path)
    assert r.returncode == 1 and "is not a file" in r.stderr and "Traceback" not in r.stderr
