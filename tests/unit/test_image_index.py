import contextlib
import datetime
import hashlib
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from pyd.errors import ImageError, ImageMismatchError
from pyd.image.index import (
    ImageIndex,
    IndexEntry,
    check_manifest,
    entry_for,
    load_index,
    manifest_url,
    newest,
    parse_index,
    render_index,
    safe_path,
)
from pyd.image.manifest import FileEntry, Manifest
from pyd.image.signing import (
    SignatureError,
    fingerprint,
    load_private_key,
    load_public_key,
    load_public_key_file,
    public_pem,
    sign,
    verify,
)

H1, H2, H3 = "a" * 64, "b" * 64, "c" * 64


def _entry(**kw: Any) -> IndexEntry:
    base: dict[str, Any] = {
        "arch": "x86_64",
        "recipe_hash": H1,
        "created": "2026-12-03T09:36:00Z",
        "suite": "trixie",
        "version": "trixie-aaaa",
        "versions": {"docker": "26.1.5"},
        "download_size": 265_000_000,
        "manifest": f"x86_64-{H1[:16]}/manifest.json",
        "manifest_size": 1073,
        "manifest_sha256": H2,
    }
    return IndexEntry(**{**base, **kw})


INDEX = ImageIndex(
    (
        _entry(),
        _entry(arch="aarch64", recipe_hash=H2, manifest="aarch64-b/manifest.json"),
        _entry(recipe_hash=H3, created="2026-12-04T08:00:00+01:00", manifest="x/m.json"),
    )
)


def _raw(index: ImageIndex = INDEX) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(render_index(index))
    return data


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


# --- index.json


def test_an_index_renders_to_the_same_bytes_and_reads_back() -> None:
    data = render_index(INDEX)
    assert data == render_index(parse_index(data))
    assert parse_index(data) == INDEX
    assert data.endswith(b"\n") and data.isascii()
    assert _raw()["format"] == 1


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_entries = st.builds(
    IndexEntry,
    arch=st.sampled_from(["x86_64", "aarch64"]),
    recipe_hash=st.text("0123456789abcdef", min_size=64, max_size=64),
    created=st.datetimes(timezones=st.just(datetime.UTC)).map(lambda d: d.isoformat()),
    suite=_text,
    version=_text,
    versions=st.dictionaries(_text, _text, max_size=3),
    download_size=st.integers(0, 2**40),
    manifest=st.lists(
        st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True), min_size=1, max_size=3
    ).map("/".join),
    manifest_size=st.integers(1, 1 << 20),
    manifest_sha256=st.text("0123456789abcdef", min_size=64, max_size=64),
)


@given(st.lists(_entries, max_size=4, unique_by=lambda e: (e.arch, e.recipe_hash)))
def test_any_index_round_trips_through_its_bytes(entries: list[IndexEntry]) -> None:
    index = ImageIndex(tuple(entries))
    assert parse_index(render_index(index)) == index
    assert render_index(parse_index(render_index(index))) == render_index(index)


@pytest.mark.parametrize(
    "path",
    [
        "../manifest.json",
        "x86/../../manifest.json",
        "/etc/passwd",
        "x86\\..\\manifest.json",
        "C:/manifest.json",
        "http://evil.example/manifest.json",
        "//evil.example/manifest.json",
        "%2e%2e/manifest.json",
        "./manifest.json",
        "x86//manifest.json",
        "x86/manifest.json?x=1",
        "",
        ".hidden/manifest.json",
        "a/" * 200 + "m.json",
        "x86/manifest.json\n",
    ],
)
def test_a_manifest_path_that_leaves_the_index_directory_is_refused(path: str) -> None:
    raw = _raw()
    raw["images"][0]["manifest"] = path
    with pytest.raises(ImageError, match="outside its directory"):
        parse_index(json.dumps(raw).encode())


@given(st.text(max_size=40))
def test_a_safe_path_joins_under_the_index_directory(path: str) -> None:
    try:
        safe_path(path)
    except ImageError:
        return
    url = manifest_url("https://mirror.example/pyd/releases/index.json", _entry(manifest=path))
    assert url.startswith("https://mirror.example/pyd/releases/")
    assert ".." not in url.split("/")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.update(format=2), "format 2, this pyd reads format 1"),
        (lambda r: r.update(format=True), "format True"),
        (lambda r: r.pop("images"), "no list of images"),
        (lambda r: r["images"][0].pop("arch"), "arch is missing"),
        (lambda r: r["images"][0].update(recipe_hash="abc"), "recipe_hash is not a sha256"),
        (lambda r: r["images"][0].update(manifest_sha256=H1.upper()), "not a sha256"),
        (lambda r: r["images"][0].update(download_size=-1), "negative"),
        (lambda r: r["images"][0].update(download_size=True), "download_size is missing or not"),
        (lambda r: r["images"][0].update(manifest_size=0), "out of range"),
        (lambda r: r["images"][0].update(created="yesterday"), "not an ISO 8601"),
        (lambda r: r["images"][0].update(created="2026-12-03T09:36:00"), "with a zone"),
        (lambda r: r["images"][0].update(arch="../x"), "not an architecture"),
        (lambda r: r["images"][0].update(arch="x86_64\n"), "not an architecture"),
        (lambda r: r["images"][0].update(recipe_hash=H1 + "\n"), "recipe_hash is not a sha256"),
        (lambda r: r["images"][0].update(versions={"docker": 26}), "must be text"),
        (lambda r: r["images"][0].update(versions="docker"), "must be text"),
        (lambda r: r["images"][0].update(suite=["trixie"]), "must be text"),
        (lambda r: r["images"].append(r["images"][0]), "twice"),
        (lambda r: r["images"].append([]), "image 4 is not a JSON object"),
    ],
)
def test_a_malformed_index_says_what_is_wrong(change: Any, message: str) -> None:
    raw = _raw()
    change(raw)
    with pytest.raises(ImageError, match=message):
        parse_index(json.dumps(raw).encode(), origin="https://m.example/index.json")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"format": 1, "format": 1, "images": []}',
        b"{",
        pytest.param(b"[" * 200_000, id="nested"),
    ],
)
def test_bytes_that_are_no_index_are_refused(data: bytes) -> None:
    with pytest.raises(ImageError, match=r"index\.json is not"):
        parse_index(data)


def test_keys_from_a_newer_publisher_are_ignored() -> None:
    raw = _raw()
    raw["mirrors"] = ["https://elsewhere.example/"]
    raw["images"][0]["compression"] = "xz"
    assert parse_index(json.dumps(raw).encode()) == INDEX


def test_the_newest_image_for_an_arch_is_chosen() -> None:
    assert newest(INDEX, "x86_64") == INDEX.images[2]  # 07:00 UTC on the 4th
    assert newest(INDEX, "aarch64") == INDEX.images[1]
    assert newest(INDEX, "riscv64") is None
    tie = ImageIndex((_entry(), _entry(recipe_hash=H3, created="2026-12-03T10:36:00+01:00")))
    assert newest(tie, "x86_64") == tie.images[1]  # the same instant: the one listed last


def _manifest(arch: str = "x86_64", recipe_hash: str = H1) -> Manifest:
    files = {n: FileEntry(10, "d" * 64) for n in ("vmlinuz", "initrd.img", "rootfs.qcow2")}
    return Manifest(
        "trixie-a",
        arch,
        "trixie",
        recipe_hash,
        {"docker": "26"},
        files,
        created="2026-12-03T09:36:00Z",
    )


def test_an_entry_is_made_from_a_manifest_and_checks_it() -> None:
    m = _manifest()
    data = m.to_json().encode()
    entry = entry_for(m, data, "x86_64-a/manifest.json")
    assert entry.download_size == 30
    assert entry.manifest_sha256 == hashlib.sha256(data).hexdigest()
    check_manifest(entry, data, m, "manifest.json")
    with pytest.raises(ImageMismatchError, match="does not match the index"):
        check_manifest(entry, data + b" ", m, "manifest.json")
    with pytest.raises(ImageMismatchError, match="describes image aarch64"):
        check_manifest(entry, data, replace(m, arch="aarch64"), "manifest.json")
    with pytest.raises(ImageError, match="outside"):
        entry_for(m, data, "../manifest.json")


# --- signatures


def test_a_signed_index_is_accepted_by_the_key_that_signed_it() -> None:
    key, other = _key(), _key()
    data = render_index(INDEX)
    index, verdict = load_index(data, sign(data, key), [other.public_key(), key.public_key()])
    assert index == INDEX
    assert verdict.key == fingerprint(key.public_key())
    assert verdict.warning == ""


def test_a_changed_index_is_refused() -> None:
    key = _key()
    data = render_index(INDEX)
    signature = sign(data, key)
    changed = data.replace(b"265000000", b"265000001")
    with pytest.raises(SignatureError, match="changed since it was signed") as e:
        load_index(changed, signature, [key.public_key()], origin="https://m.example/index.json")
    assert "https://m.example/index.json" in e.value.message
    assert "--insecure" in e.value.hint
    reformatted = json.dumps(json.loads(data)).encode()  # same content, other bytes
    with pytest.raises(SignatureError):
        load_index(reformatted, signature, [key.public_key()])


def test_a_wrong_key_unsigned_or_malformed_signature_is_refused() -> None:
    key, stranger = _key(), _key()
    data = render_index(INDEX)
    trusted = [key.public_key()]
    with pytest.raises(SignatureError, match="not signed by a trusted key") as e:
        load_index(data, sign(data, stranger), trusted)
    assert fingerprint(key.public_key()) in e.value.message
    with pytest.raises(SignatureError, match="has no signature") as e:
        load_index(data, None, trusted)
    assert "--sign" in e.value.hint
    with pytest.raises(SignatureError, match="malformed signature"):
        load_index(data, sign(data, key).hex().encode(), trusted)
    with pytest.raises(SignatureError, match="trusts no image key") as e:
        load_index(data, sign(data, key), [])
    assert "image_keys" in e.value.hint


def test_insecure_accepts_but_says_so_loudly() -> None:
    data = render_index(INDEX)
    index, verdict = load_index(data, None, [], origin="idx", insecure=True)
    assert index == INDEX
    assert verdict.key == ""
    assert verdict.warning.startswith("INSECURE: idx has no signature")
    # --insecure skips the signature, not the checks of what the index says
    with pytest.raises(ImageError, match="outside"):
        load_index(data.replace(b"x/m.json", b"../m.json"), None, [], insecure=True)


def test_a_good_signature_is_not_warned_about_even_when_insecure() -> None:
    key = _key()
    data = render_index(INDEX)
    verdict = verify(data, sign(data, key), [key.public_key()], origin="i", insecure=True)
    assert verdict.warning == ""


def test_pem_keys_load_and_wrong_ones_are_refused_clearly(tmp_path: Path) -> None:
    key = _key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    loaded = load_private_key(pem, "k.pem")
    assert fingerprint(loaded.public_key()) == fingerprint(key.public_key())
    pub = tmp_path / "pub.pem"
    pub.write_bytes(public_pem(key))
    assert fingerprint(load_public_key_file(pub)) == fingerprint(key.public_key())
    with pytest.raises(SignatureError, match="not a PEM private key"):
        load_private_key(b"hello", "k.pem")
    with pytest.raises(SignatureError, match="encrypted"):
        load_private_key(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"pw"),
            ),
            "k.pem",
        )
    ec = generate_private_key(SECP256R1())
    ec_pem = ec.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SignatureError, match="not an ed25519 key"):
        load_private_key(ec_pem, "ec.pem")
    ec_pub = ec.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SignatureError, match="not an ed25519 public key"):
        load_public_key(ec_pub, "ec.pub")
    with pytest.raises(SignatureError, match="not a PEM public key"):
        load_public_key(pem, "private-instead.pem")
    with pytest.raises(SignatureError, match="cannot read the image key"):
        load_public_key_file(tmp_path / "missing.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_keys_and_signatures_interoperate(tmp_path: Path) -> None:
    """What the issue promises publishers: keys from `openssl genpkey`, and a signature
    that `openssl pkeyutl` checks."""
    priv, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", priv], check=True)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True)
    data = render_index(INDEX)
    (tmp_path / "index.json").write_bytes(data)
    (tmp_path / "index.json.sig").write_bytes(sign(data, load_private_key(priv.read_bytes(), "k")))
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            pub,
            "-rawin",
            "-in",
            tmp_path / "index.json",
            "-sigfile",
            tmp_path / "index.json.sig",
        ],
        check=True,
        capture_output=True,
    )
    by_openssl = tmp_path / "openssl.sig"
    subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-sign",
            "-inkey",
            priv,
            "-rawin",
            "-in",
            tmp_path / "index.json",
            "-out",
            by_openssl,
        ],
        check=True,
    )
    _, verdict = load_index(data, by_openssl.read_bytes(), [load_public_key_file(pub)])
    assert verdict.key.startswith("ed25519:")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.sampled_from(sorted(_raw()["images"][0])), _json)
def test_any_value_in_any_field_is_an_image_error_or_accepted(key: str, value: Any) -> None:
    raw = _raw()
    raw["images"][0][key] = value
    with contextlib.suppress(ImageError):
        parse_index(json.dumps(raw).encode())


@given(_json)
def test_any_json_is_an_image_error_or_an_index(value: Any) -> None:
    with contextlib.suppress(ImageError):
        parse_index(json.dumps(value).encode())
