"""The credentials of QMP over loopback TLS (see qmp.py for why TLS): a CA made for one QEMU
run signs a server certificate (QEMU's, for 127.0.0.1) and a client certificate (pyd's).
The CA's key is never written: nothing else can be signed for this monitor. Files go in a
0700 directory, each 0600, with the names QEMU's `tls-creds-x509` reads (ca-cert.pem,
server-cert.pem, server-key.pem) beside the client's pair."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyd.host.private_files import private_dir, write_private_text

CA_CERT = "ca-cert.pem"
SERVER_CERT = "server-cert.pem"
SERVER_KEY = "server-key.pem"
CLIENT_CERT = "client-cert.pem"
CLIENT_KEY = "client-key.pem"
FILES = (CA_CERT, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)
# New credentials at every start; a guest may run for years between starts.
VALID_DAYS = 3650


def make_credentials(directory: Path, instance: str) -> None:
    """A fresh CA, server and client certificate in `directory` (replacing any there)."""
    shutil.rmtree(directory, ignore_errors=True)
    private_dir(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"pyd {instance} QMP CA")
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_cert(directory / CA_CERT, ca)
    for cert_file, key_file, purpose, cn in (
        (SERVER_CERT, SERVER_KEY, ExtendedKeyUsageOID.SERVER_AUTH, f"pyd {instance} QEMU"),
        (CLIENT_CERT, CLIENT_KEY, ExtendedKeyUsageOID.CLIENT_AUTH, f"pyd {instance} client"),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(_name(cn), ca_name, key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if purpose == ExtendedKeyUsageOID.SERVER_AUTH:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        _write_cert(directory / cert_file, builder.sign(ca_key, hashes.SHA256()))
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_text(directory / key_file, pem.decode())


def client_context(directory: Path) -> ssl.SSLContext:
    """pyd's side: presents the client certificate, accepts only a server the CA signed
    for 127.0.0.1."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(directory / CA_CERT))
    context.load_cert_chain(str(directory / CLIENT_CERT), str(directory / CLIENT_KEY))
    return context


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))  # a host clock slightly behind
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    # QEMU's checks want digitalSignature and keyEncipherment on a leaf, keyCertSign on a CA.
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_private_text(path, cert.public_bytes(serialization.Encoding.PEM).decode())
