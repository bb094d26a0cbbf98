"""The keys whose signature on a release index pyd trusts: the project's own, shipped in
vmconfig/image-keys/*.pem, then the config's `image_keys`, then PYD_IMAGE_KEY (paths
separated by os.pathsep). Each is a PEM ed25519 public key; one that is missing or is not
one stops the download with an error naming the file: a typo must not silently leave a
publisher untrusted (the download would then be refused with a less helpful message)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pyd.config.settings import check_index_url, split_list
from pyd.image.signing import load_public_key_file
from pyd.resources import data_dir

KEY_ENV = "PYD_IMAGE_KEY"
INDEX_ENV = "PYD_IMAGE_INDEX"
KEYS_DIR = "image-keys"  # in vmconfig/


def shipped_key_files() -> list[Path]:
    """The project's public keys, as packaged (or in the checkout)."""
    folder = data_dir("vmconfig") / KEYS_DIR
    return sorted(folder.glob("*.pem")) if folder.is_dir() else []


def key_paths(
    shipped: Sequence[Path], configured: Sequence[str], env: Mapping[str, str]
) -> list[Path]:
    """Every key file to load, in order, each once; `~` is the home directory."""
    extra = [p for p in env.get(KEY_ENV, "").split(os.pathsep) if p.strip()]
    paths = [*shipped, *(Path(p.strip()).expanduser() for p in (*configured, *extra))]
    return list(dict.fromkeys(paths))


def index_urls(configured: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """PYD_IMAGE_INDEX's URLs (spaces or commas between them) first, then the config's;
    each checked as the setting is."""
    urls = [*split_list(env.get(INDEX_ENV, "")), *configured]
    for url in urls:
        check_index_url(url, INDEX_ENV if url not in configured else "image_index")
    return list(dict.fromkeys(urls))


def trusted_keys(
    paths: Sequence[str], env: Mapping[str, str]
) -> list[tuple[str, Ed25519PublicKey]]:
    """(file name, key) for each trusted key; SignatureError (an ImageError) naming the
    first file that cannot be read or is not an ed25519 public key."""
    return [(str(p), load_public_key_file(p)) for p in key_paths(shipped_key_files(), paths, env)]
