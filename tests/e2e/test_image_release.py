"""The release path end to end with the real image: `pyd image publish --sign` it, serve the
tree on 127.0.0.1 (tests/unit/rangeserver.py: Range, cut connections), then `pyd start` on
a host that cannot build (mmdebstrap hidden from PATH) downloads, verifies and boots it.
Every tampered copy is refused by `pyd image pull` with nothing kept; cut transfers resume;
a dead mirror is skipped; an exported archive imports, verifies and boots. Two VM boots."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from pyd.image.cache import CachedImage
from pyd.image.index import INDEX, SIGNATURE
from pyd.image.signing import load_private_key, public_pem, sign
from tests.e2e.pydcli import PydEnv, remove_domain
from tests.unit.rangeserver import Behaviour, RangeServer, serve

NAME = "rel"
DOMAIN = f"pyd-{NAME}"
_STORED_INDEX = (".index.json", ".index.json.sig", ".index-meta.json")  # pull's, not an image

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


@dataclass(frozen=True)
class Release:
    tree: Path
    private: Path  # the PEM key the tree is signed with
    public: Path
    key: str  # the image key

    def files(self) -> dict[str, bytes | Path]:
        """The tree as rangeserver serves it: relative path → file."""
        return {
            p.relative_to(self.tree).as_posix(): p
            for p in sorted(self.tree.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }

    def packed_rootfs(self) -> str:
        manifest = json.loads((self.tree / self.key / "manifest.json").read_text())
        packed = manifest["files"]["rootfs.qcow2"]["packed"]
        return f"{self.key}/{packed['name']}"


def _run(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def release(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Release:
    """The `image` published and signed with a test key, as `pyd image publish` writes it."""
    where = tmp_path_factory.mktemp("release")
    key = Ed25519PrivateKey.generate()
    private, public = where / "key.pem", where / "key.pub.pem"
    private.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    public.write_bytes(public_pem(key))
    tree = where / "tree"
    r = _run("image", "publish", "--sign", str(private), str(tree), image.key, env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    print(r.stderr)
    return Release(tree, private, public, image.key)


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A directory for a fresh PYD_HOME and PYD_CACHE_DIR."""
    return tmp_path


def _env(where: Path, release: Release, index: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYD_HOME=str(where / "home"),
        PYD_CACHE_DIR=str(where / "cache"),
        PYD_IMAGE_INDEX=index,
        PYD_IMAGE_KEY=str(release.public),
        **extra,
    )
    return env


def _pull(
    where: Path, release: Release, index: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return _run("image", "pull", *args, env=_env(where, release, index))


def _nothing_kept(where: Path) -> None:
    images = where / "cache" / "images"
    kept = [
        p.relative_to(images).as_posix()
        for p in images.rglob("*")
        if p.name != ".lock" and p.name not in _STORED_INDEX
    ]
    assert kept == []


def _verified(where: Path, release: Release, key: str) -> None:
    r = _run("image", "verify", env=_env(where, release, ""))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", key]


def _tampered(release: Release, changes: dict[str, bytes | Path | None]) -> dict[str, bytes | Path]:
    """The tree's files with some replaced (bytes or a file) or dropped (None)."""
    files = release.files()
    for name, value in changes.items():
        if value is None:
            files.pop(name)
        else:
            files[name] = value
    return files


def _sign_index(release: Release, data: bytes) -> bytes:
    return sign(data, load_private_key(release.private.read_bytes(), str(release.private)))


# --- the one boot: download on first start --------------------------------------------


def _path_without_mmdebstrap(where: Path) -> str:
    """A PATH that has every command of the usual one but mmdebstrap: pyd cannot build."""
    bin_dir = where / "bin"
    bin_dir.mkdir()
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            target = bin_dir / entry.name
            if entry.name != "mmdebstrap" and not target.exists():
                target.symlink_to(entry.path)
    return str(bin_dir)


def _destroy_domain() -> None:
    remove_domain(DOMAIN)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """PYD_HOME and the cache in a directory every user may enter (pytest's are 0700): the
    VM reads its disks there."""
    path = Path(tempfile.mkdtemp(prefix="pyd-e2e-release-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_start_downloads_verifies_and_boots_where_pyd_cannot_build(
    release: Release, open_dir: Path, tmp_path: Path
) -> None:
    path = _path_without_mmdebstrap(open_dir)
    assert shutil.which("mmdebstrap", path=path) is None
    with serve(release.files()) as server:
        env = PydEnv(open_dir / "home", tmp_path / "docker")
        extra = {
            "PYD_CACHE_DIR": str(open_dir / "cache"),
            "PYD_IMAGE_INDEX": server.url + INDEX,
            "PYD_IMAGE_KEY": str(release.public),
            "PATH": path,
        }
        try:
            r = _run("start", "-n", NAME, "--cpus", "2", "--memory", "2GiB", env=env.env(**extra))
            assert r.returncode == 0 and "is running" in r.stderr, r.stderr
            assert "signed by ed25519:" in r.stderr and release.key in r.stderr
            # Downloaded, not built: the packed rootfs came from the server.
            assert release.packed_rootfs() in {p for p, _, _ in server.stats.requests}
            version = env.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
            assert version, "docker version answered no server version"
            # The running instance's image is never pruned (its OS disk is an overlay on it).
            r = _run("image", "prune", env=env.env(**extra))
            assert r.returncode == 0, r.stderr
            assert f"kept {release.key}" in r.stdout and f"used by {NAME}" in r.stdout
            assert "used by process" in r.stdout  # QEMU holds its base open, seen in /proc
            _verified(open_dir, release, release.key)
        finally:
            _run("delete", "-n", NAME, "-f", env=env.env(**extra))
            _destroy_domain()
    r = _run("image", "prune", env=env.env(**extra))  # now nothing uses it
    assert r.returncode == 0 and f"removed {release.key}" in r.stdout, r.stderr
    assert [p.name for p in (open_dir / "cache" / "images").iterdir() if p.is_dir()] == []


# --- refusals: each on a fresh cache, nothing kept --------------------------------------


def test_a_flipped_byte_in_the_packed_rootfs_is_refused(
    release: Release, fresh: Path, tmp_path: Path
) -> None:
    name = release.packed_rootfs()
    bad = tmp_path / "bad.zst"
    shutil.copyfile(release.tree / name, bad)
    with bad.open("r+b") as f:
        f.seek(bad.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x01]))
    with serve(_tampered(release, {name: bad})) as server:
        r = _pull(fresh, release, server.url + INDEX)
    assert r.returncode == 1, r.stderr
    assert "rootfs.qcow2.zst" in r.stderr and "does not match its manifest" in r.stderr
    assert "Traceback" not in r.stderr
    _nothing_kept(fresh)


def _changed_index(release: Release) -> bytes:
    index = json.loads((release.tree / INDEX).read_bytes())
    index["images"][0]["versions"]["docker"] = "99.0.0"
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()


@pytest.mark.parametrize("case", ["changed index", "other key", "escaping manifest path"])
def test_a_bad_index_is_refused_before_any_download(
    release: Release, fresh: Path, case: str
) -> None:
    if case == "changed index":
        files = _tampered(release, {INDEX: _changed_index(release)})
        expect = "or was changed since it was signed"
    elif case == "other key":
        data = (release.tree / INDEX).read_bytes()
        files = _tampered(release, {SIGNATURE: sign(data, Ed25519PrivateKey.generate())})
        expect = "is not signed by a trusted key"
    else:
        index = json.loads((release.tree / INDEX).read_bytes())
        index["images"][0]["manifest"] = f"../../{release.key}/manifest.json"
        data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
        files = _tampered(release, {INDEX: data, SIGNATURE: _sign_index(release, data)})
        expect = "outside its directory"
    with serve(files) as server:
        r = _pull(fresh, release, server.url + INDEX)
        sent = server.stats.requests
    assert r.returncode == 1, r.stderr
    assert expect in r.stderr and "Traceback" not in r.stderr
    assert {p for p, _, _ in sent} <= {INDEX, SIGNATURE}  # nothing else was asked for
    _nothing_kept(fresh)


def test_unsigned_is_refused_with_the_hint_and_taken_loudly_with_insecure(
    release: Release, fresh: Path
) -> None:
    with serve(_tampered(release, {SIGNATURE: None})) as server:
        r = _pull(fresh, release, server.url + INDEX)
        assert r.returncode == 1, r.stderr
        assert "has no signature" in r.stderr and "--insecure" in r.stderr
        _nothing_kept(fresh)
        r = _pull(fresh, release, server.url + INDEX, "--insecure")
    assert r.returncode == 0, r.stderr
    assert "WARNING: INSECURE" in r.stderr
    _verified(fresh, release, release.key)
    assert not (fresh / "cache" / "images" / ".index.json").exists()  # never kept unchecked


# --- the network misbehaving ---------------------------------------------------------


def _sent(server: RangeServer, name: str) -> list[tuple[str, int]]:
    return [(rng, status) for path, rng, status in server.stats.requests if path == name]


def test_cut_connections_resume_and_the_result_verifies(release: Release, fresh: Path) -> None:
    name = release.packed_rootfs()
    size = (release.tree / name).stat().st_size
    behaviour = Behaviour(cut_after=size // 5, cuts=3)
    with serve(release.files(), behaviour) as server:
        r = _pull(fresh, release, server.url + INDEX)
    assert r.returncode == 0, r.stderr
    _verified(fresh, release, release.key)
    sent = _sent(server, name)
    assert sum(1 for rng, status in sent if rng and status == 206) >= 3, sent
    assert behaviour.cuts == 0
    total = sum(p.stat().st_size for p in release.files().values() if isinstance(p, Path))
    assert server.stats.body_bytes < total * 1.1  # resumed, not restarted


def test_a_server_without_range_restarts_the_file(release: Release, fresh: Path) -> None:
    name = release.packed_rootfs()
    size = (release.tree / name).stat().st_size
    behaviour = Behaviour(ranges=False, cut_after=size // 2, cuts=1)
    with serve(release.files(), behaviour) as server:
        r = _pull(fresh, release, server.url + INDEX)
    assert r.returncode == 0, r.stderr
    _verified(fresh, release, release.key)
    assert [status for _, status in _sent(server, name)] == [200, 200]
    assert server.stats.body_bytes >= size * 1.5  # half of it came twice


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{INDEX}"  # nothing listens there now


def test_a_dead_first_mirror_is_skipped(release: Release, fresh: Path) -> None:
    with serve(release.files()) as server:
        r = _pull(fresh, release, f"{_dead_url()} {server.url}{INDEX}")
    assert r.returncode == 0, r.stderr
    _verified(fresh, release, release.key)


# --- offline: export, then import on a fresh cache --------------------------------------


def test_export_then_import_on_a_fresh_cache_verifies(
    release: Release, fresh: Path, image: CachedImage
) -> None:
    archive = fresh / "image.tar"
    env = dict(os.environ)
    r = _run("image", "export", "--sign", str(release.private), image.key, str(archive), env=env)
    assert r.returncode == 0, r.stderr
    print(r.stderr)
    r = _run("image", "import", str(archive), env=_env(fresh, release, ""))
    assert r.returncode == 0, r.stderr
    assert "signed by ed25519:" in r.stderr
    _verified(fresh, release, image.key)
    assert list((fresh / "cache").glob(".pyd-import-*")) == []  # its scratch tree is gone
    r = _run("image", "boot-check", image.key, env=_env(fresh, release, ""))  # a 2nd boot, ~15 s
    assert r.returncode == 0, r.stderr
    assert "Docker" in r.stderr and "answered" in r.stderr
