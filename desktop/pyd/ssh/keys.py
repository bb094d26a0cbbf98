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


@dataclass(frozen=True)
class PinnedHostKey:
    """The guest's host key as a client pins it: paramiko's HostKeys entry and OpenSSH's
    known_hosts line are both made from this, so the two clients trust the same thing."""

    host_pattern: str  # "[127.0.0.1]:2222"; the bare host on port 22, as both clients say
    kind: str  # "ssh-ed25519"
    key_base64: str

    @property
    def known_hosts_line(self) -> str:
        return f"{self.host_pattern} {self.kind} {self.key_base64}\n"


def pinned_host_key(host: str, port: int, host_public_key: str) -> PinnedHostKey:
    """The pin for the guest at host:port whose key is `host_public_key` ("ssh-ed25519
    AAAA… [comment]")."""
    kind, b64 = host_public_key.split()[:2]
    return PinnedHostKey(host if port == 22 else f"[{host}]:{port}", kind, b64)


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
