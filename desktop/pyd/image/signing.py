"""ed25519 detached signatures over the exact bytes of index.json (index.json.sig: the raw
64-byte signature, as `openssl pkeyutl -sign -rawin` writes it).

The signature covers the bytes as served, and they are checked before they are parsed:
no canonical form has to be re-derived on the reading side, and a parser bug never sees
unsigned input. Keys are PEM: a private key as `openssl genpkey -algorithm ed25519` writes
it, public keys as `openssl pkey -pubout` does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pyd.errors import ImageError, UsageError

SIGNATURE_SIZE = 64


class SignatureError(ImageError):
    """The index is unsigned, wrongly signed or changed since it was signed: refused."""


@dataclass(frozen=True)
class Verdict:
    """How an index was accepted: by which key, or insecurely (and why)."""

    key: str  # fingerprint of the key that signed it, "" when accepted insecurely
    warning: str = ""


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short, stable name for a key in messages: sha256 of its raw 32 bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(pem: bytes, origin: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise SignatureError(
            f"{origin} is an encrypted private key",
            hint="give an unencrypted one: openssl genpkey -algorithm ed25519 -out KEYFILE",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            f"{origin} is not a PEM private key",
            hint="make one with: openssl genpkey -algorithm ed25519 -out KEYFILE",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            f"{origin} is a {type(key).__name__.removeprefix('_')}, not an ed25519 key",
            hint="make one with: openssl genpkey -algorithm ed25519 -out KEYFILE",
        )
    return key


def load_public_key(pem: bytes, origin: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            f"{origin} is not a PEM public key",
            hint="derive one from the private key: openssl pkey -in KEYFILE -pubout",
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{origin} is not an ed25519 public key")
    return key


def load_private_key_file(path: Path) -> Ed25519PrivateKey:
    """The signing key in `path` (`--sign KEYFILE`); a UsageError when it cannot be read."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise UsageError(
            f"cannot read the key file {path}: {e.strerror or e}",
            hint="make one with: openssl genpkey -algorithm ed25519 -out KEYFILE",
        ) from None
    return load_private_key(pem, str(path))


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise SignatureError(
            f"cannot read the image key {path}: {e.strerror}",
            hint="check image_keys in the config and PYD_IMAGE_KEY",
        ) from None
    return load_public_key(pem, str(path))


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return key.sign(data)


def verify(
    data: bytes,
    signature: bytes | None,
    keys: Sequence[Ed25519PublicKey],
    *,
    origin: str,
    insecure: bool = False,
) -> Verdict:
    """Accepts `data` when one of `keys` signed it. Otherwise SignatureError, unless
    `insecure`: then the Verdict's warning says what was not checked, for the caller to
    print loudly."""
    problem = _problem(data, signature, keys)
    if problem is None:
        assert signature is not None
        signer = next(k for k in keys if _valid(k, signature, data))
        return Verdict(fingerprint(signer))
    what, hint = problem
    if insecure:
        return Verdict("", f"INSECURE: {origin} {what}; it was used anyway (--insecure)")
    raise SignatureError(f"{origin} {what}; it was refused", hint=hint)


_TAMPERED = "its server or a mirror may be compromised; pass --insecure only if you know why"


def _problem(
    data: bytes, signature: bytes | None, keys: Sequence[Ed25519PublicKey]
) -> tuple[str, str] | None:
    """(what is wrong, what to do) or None when one of `keys` signed `data`."""
    if signature is None:
        return "has no signature (index.json.sig)", (
            "publish it with `pyd image publish --sign KEYFILE`, or pass --insecure to use it "
            "unchecked"
        )
    if len(signature) != SIGNATURE_SIZE:
        return f"has a malformed signature ({len(signature)} bytes, not {SIGNATURE_SIZE})", (
            _TAMPERED
        )
    if not keys:
        return "cannot be checked: pyd trusts no image key", (
            "add the publisher's PEM public key to image_keys in the config or PYD_IMAGE_KEY"
        )
    if any(_valid(k, signature, data) for k in keys):
        return None
    names = ", ".join(fingerprint(k) for k in keys)
    return f"is not signed by a trusted key ({names}), or was changed since it was signed", (
        "if the publisher has a new key, add it to image_keys or PYD_IMAGE_KEY; otherwise "
        + _TAMPERED
    )


def _valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
