"""ed25519 key pairs made by pyd: the client key it logs in with and the guest's host key,
which pyd pins before the guest first boots."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str
    public_openssh: str  # "ssh-ed25519 AAAA… comment"


def generate_keypair(comment: str) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(private, f"{public} {comment}")


def write_private(path: Path, text: str) -> None:
    """Creates the file 0600 from the start (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_public(path: Path) -> str:
    """The public half of the key pair at `path` ("ssh-ed25519 AAAA… comment"), from its
    `.pub` file. Raises OSError when there is none."""
    return public_path(path).read_text().strip()


def public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def load_keypair(path: Path) -> KeyPair:
    """The key pair at `path` (+ `.pub`). Raises OSError when a half is missing."""
    return KeyPair(path.read_text(), read_public(path))


def write_keypair(path: Path, pair: KeyPair) -> None:
    """Both halves 0600 (the public one is no secret, but it sits with the instance's files)."""
    write_private(path, pair.private_openssh)
    write_private(public_path(path), pair.public_openssh + "\n")
