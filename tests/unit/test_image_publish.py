import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pyd.cli.main import main
from pyd.errors import ImageError, UsageError
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.fetch import fetch_files
from pyd.image.index import INDEX, SIGNATURE, check_manifest, load_index, manifest_url
from pyd.image.manifest import MANIFEST, FileEntry, Manifest, parse_manifest
from pyd.image.publish import publish
from tests.unit.rangeserver import serve

# vmlinux compresses well (packed); vmlinuz and initrd.img look random (published plain).
FILES = {
    "vmlinuz": os.urandom(20_000),
    "initrd.img": os.urandom(3_000),
    "rootfs.qcow2": b"not a qcow2, so it is not re-written " * 2000,
    "vmlinux": b"\x7fELF kernel text " * 10_000,
}


def _image(cache: ImageCache, recipe: str, arch: str = "x86_64") -> CachedImage:
    with cache.locked(), cache.staging() as staging:
        for name, data in FILES.items():
            (staging / name).write_bytes(data)
        files = {n: FileEntry(len(d), hashlib.sha256(d).hexdigest()) for n, d in FILES.items()}
        manifest = Manifest(
            version=f"trixie-{recipe}",
            arch=arch,
            suite="trixie",
            recipe_hash=recipe * 64,
            versions={"docker": "26.1.5"},
            files=files,
            created="2026-12-03T10:00:00Z",
        )
        return cache.commit(staging, f"{arch}-{recipe * 16}", manifest)


def _quiet(line: str) -> None:
    """Progress lines are not what these tests check."""


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_published_signed_tree_is_accepted_and_fetches(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    image = _image(cache, "a")
    key = _key()
    out = tmp_path / "tree"
    publish(cache, out, [], key, _quiet)
    data = (out / INDEX).read_bytes()
    index, verdict = load_index(data, (out / SIGNATURE).read_bytes(), [key.public_key()])
    assert verdict.key and not verdict.warning
    (entry,) = index.images
    assert entry.manifest == f"{image.key}/{MANIFEST}"
    mbytes = (out / entry.manifest).read_bytes()
    manifest = parse_manifest(mbytes.decode())
    check_manifest(entry, mbytes, manifest, "manifest")
    assert manifest.files["vmlinux"].packed is not None
    assert manifest.files["vmlinuz"].packed is None
    assert entry.download_size == manifest.download_size < manifest.total_size
    assert sorted(p.name for p in (out / image.key).iterdir()) == [
        "initrd.img",
        "manifest.json",
        "rootfs.qcow2.zst",
        "vmlinux.zst",
        "vmlinuz",
    ]
    # A copy, not a hard link: a tree edited in place leaves the cached image as it is.
    assert not os.path.samefile(out / image.key / "vmlinuz", image.file("vmlinuz"))
    with (out / image.key / "initrd.img").open("r+b") as f:
        f.write(b"edited")
    assert image.file("initrd.img").read_bytes() == FILES["initrd.img"]
    (out / image.key / "initrd.img").write_bytes(FILES["initrd.img"])
    # What a client does with it: fetch into a fresh cache, unpacked and verified.
    client = ImageCache(tmp_path / "client")
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    with serve(files) as srv:  # type: ignore[arg-type]
        murl = manifest_url(srv.url + INDEX, entry)
        got = fetch_files(client, manifest, [murl], lambda *a: None)
    for name, content in FILES.items():
        assert got.file(name).read_bytes() == content


def test_publishing_again_merges_with_the_index_there(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    a, b = _image(cache, "a"), _image(cache, "b", arch="aarch64")
    out = tmp_path / "tree"
    publish(cache, out, [a.key], None, _quiet)
    packed = out / a.key / "vmlinux.zst"
    before = packed.stat().st_mtime_ns
    index = publish(cache, out, [b.key, a.key], None, _quiet)
    assert [e.recipe_hash[0] for e in index.images] == ["a", "b"]  # a replaced in place
    assert packed.stat().st_mtime_ns == before  # still the one its manifest names: re-used
    # Another publish of b alone keeps a listed.
    index = publish(cache, out, [b.key], None, _quiet)
    assert [e.arch for e in index.images] == ["x86_64", "aarch64"]
    parsed, _ = load_index((out / INDEX).read_bytes(), None, [], insecure=True)
    assert parsed == index


def test_a_signed_publish_merges_only_an_index_its_key_signed(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    a, b = _image(cache, "a"), _image(cache, "b", arch="aarch64")
    key, other = _key(), _key()
    out = tmp_path / "tree"
    publish(cache, out, [a.key], key, _quiet)
    index = publish(cache, out, [b.key], key, _quiet)  # its own signed index: merged
    assert [e.arch for e in index.images] == ["x86_64", "aarch64"]
    signed = (out / INDEX).read_bytes(), (out / SIGNATURE).read_bytes()
    # An entry added by whoever can write the tree must not become signed.
    raw = json.loads(signed[0])
    raw["images"].append({**raw["images"][0], "recipe_hash": "e" * 64})
    (out / INDEX).write_text(json.dumps(raw))
    for change, message in [
        (lambda: None, "not signed by a trusted key"),
        (lambda: (out / SIGNATURE).unlink(), "has no signature"),
        (lambda: publish(cache, out, [a.key], None, _quiet), "has no signature"),
    ]:
        change()
        with pytest.raises(ImageError, match=message) as e:
            publish(cache, out, [b.key], key, _quiet)
        assert "publish into an empty directory" in (e.value.hint or "")
    (out / INDEX).write_bytes(signed[0])
    (out / SIGNATURE).write_bytes(signed[1])
    with pytest.raises(ImageError, match="not signed by a trusted key"):
        publish(cache, out, [b.key], other, _quiet)  # another key's merge
    assert (out / INDEX).read_bytes() == signed[0]
    assert (out / SIGNATURE).read_bytes() == signed[1]


def test_an_unsigned_publish_removes_a_stale_signature(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    image = _image(cache, "a")
    out = tmp_path / "tree"
    publish(cache, out, [], _key(), _quiet)
    assert (out / SIGNATURE).exists()
    publish(cache, out, [image.key], None, _quiet)
    assert not (out / SIGNATURE).exists()


def test_a_damaged_published_file_is_packed_again(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    image = _image(cache, "a")
    out = tmp_path / "tree"
    publish(cache, out, [], None, _quiet)
    packed = out / image.key / "vmlinux.zst"
    good = packed.read_bytes()
    packed.write_bytes(b"x" + good[1:])
    publish(cache, out, [], None, _quiet)
    assert packed.read_bytes() == good


def test_bad_input_is_refused_with_a_hint(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError, match="no image in the cache"):
        publish(cache, tmp_path / "tree", [], None, _quiet)
    image = _image(cache, "a")
    with pytest.raises(UsageError, match=rf"no cached image 'x86_64-nope' \(cached: {image.key}"):
        publish(cache, tmp_path / "tree", ["x86_64-nope"], None, _quiet)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        publish(cache, tmp_path / "file", [], None, _quiet)
    before = sorted(p.relative_to(cache.root) for p in cache.root.rglob("*"))
    for inside in (
        cache.root,
        cache.root / ".." / "cache",
        cache.root / "x",
        cache.root / image.key,
    ):
        with pytest.raises(UsageError, match="is inside the image cache"):
            publish(cache, inside, [], None, _quiet)
    assert sorted(p.relative_to(cache.root) for p in cache.root.rglob("*")) == before
    assert cache.get(image.key) == image
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / INDEX).write_text("{not json")
    with pytest.raises(ImageError, match="would lose the images it lists"):
        publish(cache, tmp_path / "tree", [], None, _quiet)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The command as `pyd` runs it: an expected failure is a message and an exit code (an
    unexpected exception, with its traceback, would fail the test)."""
    try:
        main(["image", "publish", *args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.err + out.out


def test_the_cli_refuses_a_bad_key_file_and_warns_when_unsigned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "pyd-cache"))
    cache = ImageCache(tmp_path / "pyd-cache" / "images")
    image = _image(cache, "a")
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    code, out = _cli(capsys, "--sign", str(bad), str(tmp_path / "tree"))
    assert code != 0 and "is not a PEM private key" in out and "openssl genpkey" in out
    code, out = _cli(capsys, "--sign", str(tmp_path / "missing.pem"), str(tmp_path / "tree"))
    assert code != 0 and "cannot read the key file" in out
    assert not (tmp_path / "tree").exists()
    code, out = _cli(capsys, str(cache.root))
    assert code == 2 and "is inside the image cache" in out and "outside the cache" in out
    code, out = _cli(capsys, str(tmp_path / "tree"), image.key)
    assert code == 0, out
    assert "UNSIGNED" in out and "--insecure" in out
    assert out.splitlines()[-1] == str(tmp_path / "tree")
    pem = tmp_path / "good.pem"
    pem.write_bytes(
        _key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    code, out = _cli(capsys, "--sign", str(pem), str(tmp_path / "tree"), "x86_64-nope")
    assert code != 0 and "no cached image 'x86_64-nope'" in out
    # The unsigned tree is not merged into a signed one.
    code, out = _cli(capsys, "--sign", str(pem), str(tmp_path / "tree"))
    assert code != 0 and "has no signature" in out and "publish into an empty directory" in out
    assert not (tmp_path / "tree" / SIGNATURE).exists()
    code, out = _cli(capsys, "--sign", str(pem), str(tmp_path / "signed"))
    assert code == 0, out
    assert "UNSIGNED" not in out and (tmp_path / "signed" / SIGNATURE).exists()


def test_an_image_published_from_a_fetched_cache_keeps_its_digests(tmp_path: Path) -> None:
    """Publishing is repeatable: the same cached files give the same manifest bytes."""
    cache = ImageCache(tmp_path / "cache")
    _image(cache, "a")
    first = publish(cache, tmp_path / "one", [], None, _quiet)
    second = publish(cache, tmp_path / "two", [], None, _quiet)
    assert first.images[0] == second.images[0]
