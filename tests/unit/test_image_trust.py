import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from pyd.config.settings import parse_config, to_toml_dict, with_value
from pyd.config.store import load_config, platform_defaults, save_config
from pyd.errors import UsageError
from pyd.host.env import Host
from pyd.image.signing import SignatureError, fingerprint, public_pem
from pyd.image.trust import (
    INDEX_ENV,
    KEY_ENV,
    index_urls,
    key_paths,
    shipped_key_files,
    trusted_keys,
)

HOST = Host("linux", "/home/u")


def _pem(path: Path) -> Path:
    path.write_bytes(public_pem(Ed25519PrivateKey.generate()))
    return path


def test_the_project_key_ships_and_loads() -> None:
    shipped = shipped_key_files()
    assert [p.name for p in shipped] == ["pyd-release.pem"]
    ((name, key),) = trusted_keys([], {})
    assert name == str(shipped[0]) and isinstance(key, Ed25519PublicKey)
    assert fingerprint(key).startswith("ed25519:")


def test_config_keys_then_env_keys_are_trusted_after_the_shipped_one(tmp_path: Path) -> None:
    a, b, c = (_pem(tmp_path / f"{n}.pem") for n in "abc")
    env = {KEY_ENV: f"{b}{os.pathsep}{c}{os.pathsep}"}
    names = [name for name, _ in trusted_keys([str(a), str(b)], env)]
    assert names == [str(shipped_key_files()[0]), str(a), str(b), str(c)]  # b once


def test_a_key_path_may_start_with_the_home_directory() -> None:
    assert key_paths([], ["~/keys/k.pem"], {}) == [Path.home() / "keys" / "k.pem"]


def test_a_bad_pem_is_refused_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "typo.pem"
    bad.write_text("not a key\n")
    with pytest.raises(SignatureError, match=f"{bad} is not a PEM public key"):
        trusted_keys([], {KEY_ENV: str(bad)})


def test_a_missing_key_file_is_refused_naming_it(tmp_path: Path) -> None:
    gone = tmp_path / "gone.pem"
    with pytest.raises(SignatureError, match=f"cannot read the image key {gone}") as e:
        trusted_keys([str(gone)], {})
    assert "image_keys" in e.value.hint


def test_a_key_of_another_kind_is_refused_naming_the_file(tmp_path: Path) -> None:
    ec = tmp_path / "ec.pem"
    ec.write_bytes(
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(SignatureError, match=f"{ec} is not an ed25519 public key"):
        trusted_keys([str(ec)], {})


def test_the_environment_index_urls_come_first_split_by_spaces_or_commas() -> None:
    env = {INDEX_ENV: " https://a/index.json,file:///b/index.json  http://c/i.json "}
    assert index_urls(["https://mirror/index.json", "http://c/i.json"], env) == [
        "https://a/index.json",
        "file:///b/index.json",
        "http://c/i.json",
        "https://mirror/index.json",
    ]
    assert index_urls([], {}) == []


def test_a_bad_environment_index_url_is_refused_naming_the_variable() -> None:
    with pytest.raises(UsageError, match=f"{INDEX_ENV}: 'ftp://x/index.json' is not an http"):
        index_urls([], {INDEX_ENV: "ftp://x/index.json"})


def test_image_settings_are_checked_in_a_config_file() -> None:
    defaults = platform_defaults(HOST)
    data = {"image_index": ["https://a/index.json", "index.json"], "image_source": "fetch"}
    with pytest.raises(UsageError) as e:
        parse_config(data, "config.toml", defaults, HOST)
    assert "'index.json' is not an http://, https:// or file:// URL" in e.value.message
    assert "image_source: must be one of auto, build, download" in e.value.message
    with pytest.raises(UsageError, match="image_keys: expected a list of strings"):
        parse_config({"image_keys": "k.pem"}, "config.toml", defaults, HOST)


def test_image_settings_are_set_from_one_string_and_written_only_when_set(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.toml"
    cfg = load_config(path, HOST)
    assert (cfg.image_index, cfg.image_keys, cfg.image_source) == ((), (), "auto")
    assert "image_index" not in to_toml_dict(cfg)  # a later shipped default is not pinned
    set_ = with_value(cfg, "image_index", "https://a/index.json, http://b/index.json")
    set_ = with_value(set_, "image_source", "download")
    assert set_.image_index == ("https://a/index.json", "http://b/index.json")
    save_config(path, set_, HOST)
    assert load_config(path, HOST) == set_
    save_config(path, with_value(set_, "image_index", ""), HOST)
    text = path.read_text()
    assert "image_index" not in text and 'image_source = "download"' in text
