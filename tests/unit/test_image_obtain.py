"""Where a new instance's image comes from: built where the host can, downloaded from the
signed index elsewhere (image/obtain.py), and `pyd start` on a fresh cache that downloads."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pyd.config.arches import get_arch
from pyd.errors import ImageError
from pyd.image import obtain
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.obtain import can_build, obtain_image
from pyd.image.pull import IndexUnreachable, PullProgress
from pyd.image.signing import public_pem
from pyd.instance.registry import instance
from pyd.instance.state import load_state
from pyd.lifecycle import start as start_module
from pyd.vm.backends.base import VMState
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress
from tests.unit.rangeserver import serve
from tests.unit.test_image_pull import KEY, KEYS, OLD, image_files, release_tree

X86 = get_arch("x86_64")
CREATED = "2026-12-01T00:00:00Z"


def _which(*present: str) -> Callable[[str], str | None]:
    return lambda tool: f"/usr/bin/{tool}" if tool in present else None


@pytest.mark.parametrize(
    ("platform", "tools", "euid", "able", "why"),
    [
        ("linux", ("mmdebstrap",), 0, True, ""),
        ("darwin", ("mmdebstrap",), 0, False, "on Linux only (this is darwin)"),
        ("win32", (), None, False, "on Linux only (this is win32)"),
        ("linux", ("mmdebstrap",), 1000, False, "needs root"),
        ("linux", (), 0, False, "mmdebstrap is not installed"),
    ],
)
def test_can_build(
    platform: str, tools: tuple[str, ...], euid: int | None, able: bool, why: str
) -> None:
    got, reason = can_build(platform, _which(*tools), euid)
    assert got is able
    assert why in reason and (reason == "") is able


class Builds:
    """A stand-in for build_image that records its calls and makes no image."""

    def __init__(self, image: CachedImage | None = None) -> None:
        self.calls = 0
        self.image = image

    def __call__(self, *args: Any) -> tuple[CachedImage, bool]:
        self.calls += 1
        if self.image is None:
            raise AssertionError("build_image was not expected")
        return self.image, True


def _host(monkeypatch: pytest.MonkeyPatch, able: bool) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    why = "" if able else "the image is built on Linux only (this is darwin)"
    monkeypatch.setattr(obtain, "can_build_here", lambda: (able, why))


def _obtain(
    cache: ImageCache, source: str, urls: list[str], build: Builds, arch: str = "x86_64"
) -> tuple[CachedImage, list[str]]:
    said: list[str] = []
    image = obtain_image(
        cache, get_arch(arch), source, urls, KEYS, PullProgress(said.append), build=build
    )
    return image, said


def test_source_build_on_a_host_that_cannot_build_says_why_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=False)
    with pytest.raises(ImageError, match=r"cannot build the image: .*Linux only") as e:
        _obtain(ImageCache(tmp_path), "build", ["http://127.0.0.1:9/index.json"], Builds())
    assert "image_source auto" in e.value.hint


def test_a_host_that_cannot_build_and_has_no_index_is_told_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=False)
    with pytest.raises(ImageError, match="no image index is configured: set image_index") as e:
        _obtain(ImageCache(tmp_path), "auto", [], Builds())
    assert "sudo pyd image build" in e.value.message and "Linux only" in e.value.hint


def test_auto_builds_where_the_host_can_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=True)
    cache = ImageCache(tmp_path / "cache")
    with serve(release_tree([(image_files(), OLD, CREATED)])) as srv:
        built = _pulled(cache, srv.url)
        builds = Builds(built)
        image, said = _obtain(cache, "auto", [srv.url + "index.json"], builds)
        requests = len(srv.stats.requests)
        _obtain(cache, "auto", [srv.url + "index.json"], builds)
    assert image is built and builds.calls == 2 and said == [f"built image {built.key}"]
    assert len(srv.stats.requests) == requests  # the index was never asked


def test_auto_downloads_where_the_host_cannot_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=False)
    cache = ImageCache(tmp_path / "cache")
    files = image_files()
    with serve(release_tree([(files, OLD, CREATED)])) as srv:
        image, said = _obtain(cache, "auto", [srv.url + "index.json"], Builds())
    assert image.key == image_key("x86_64", OLD)
    assert image.file("vmlinuz").read_bytes() == files["vmlinuz"]
    assert any(line.startswith("downloading ") for line in said)


def test_source_download_downloads_even_where_the_host_can_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=True)
    cache = ImageCache(tmp_path / "cache")
    with serve(release_tree([(image_files(), OLD, CREATED)])) as srv:
        image, _ = _obtain(cache, "download", [srv.url + "index.json"], Builds())
    assert image.manifest.source.startswith(srv.url)


def test_another_architecture_comes_from_the_cache_or_the_index_never_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=True)
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError, match="no aarch64 image in the cache") as e:
        _obtain(cache, "auto", [], Builds(), arch="aarch64")
    assert "sudo pyd image build --arch aarch64" in e.value.hint
    tree = release_tree([(image_files(), OLD, CREATED)], arch="aarch64")
    with serve(tree) as srv:
        image, _ = _obtain(cache, "auto", [srv.url + "index.json"], Builds(), arch="aarch64")
        again, _ = _obtain(cache, "auto", [], Builds(), arch="aarch64")
    assert image.manifest.arch == "aarch64" and again.key == image.key


def test_an_unreachable_index_falls_back_to_a_cached_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(monkeypatch, able=False)
    cache = ImageCache(tmp_path / "cache")
    with serve(release_tree([(image_files(), OLD, CREATED)])) as srv:
        cached = _pulled(cache, srv.url)
        dead = srv.url + "index.json"
    image, said = _obtain(cache, "download", [dead], Builds())  # the server is gone
    assert image.key == cached.key
    assert said[-1].startswith("no image index answered") and cached.key in said[-1]
    with pytest.raises(IndexUnreachable):
        _obtain(ImageCache(tmp_path / "empty"), "download", [dead], Builds())


def _pulled(cache: ImageCache, url: str) -> CachedImage:
    image, _ = _obtain(cache, "download", [url + "index.json"], Builds())
    return image


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_start_on_a_fresh_cache_with_image_source_download_pulls_the_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pyd start` where the host does not build: the image comes from the signed index,
    its progress is shown, and the instance boots on it."""
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    vm = FakeBackend(VMState.ABSENT)
    monkeypatch.setattr(start_module, "backend_for_config", lambda name, cfg: vm)
    monkeypatch.setattr(start_module, "build_image", Builds())  # never called
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    rootfs = tmp_path / "rootfs.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(rootfs), "64M"], check=True)
    files = {**image_files(), "rootfs.qcow2": rootfs.read_bytes()}
    key_file = tmp_path / "release.pem"
    key_file.write_bytes(public_pem(KEY))
    monkeypatch.setenv("PYD_IMAGE_KEY", str(key_file))
    progress = RecordingProgress()
    settings = {"memory": "512MiB", "disk": "1GiB", "accel": "tcg", "image_source": "download"}
    with serve(release_tree([(files, OLD, CREATED)])) as srv:
        monkeypatch.setenv("PYD_IMAGE_INDEX", srv.url + "index.json")
        start_module.start("dl", settings, False, progress, agent=FakeAgent())
    state = load_state(instance("dl").files.state)
    assert state is not None and state.image_key == image_key("x86_64", OLD)
    assert vm.calls == ["start"]
    assert any(s.startswith("rootfs.qcow2: ") and " MB" in s for s in progress.said)
    assert any("signed by ed25519:" in s for s in progress.said)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_start_refuses_an_index_signed_by_an_untrusted_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PYD_IMAGE_KEY", raising=False)
    vm = FakeBackend(VMState.ABSENT)
    monkeypatch.setattr(start_module, "backend_for_config", lambda name, cfg: vm)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    tree = release_tree([(image_files(), OLD, CREATED)], key=Ed25519PrivateKey.generate())
    settings = {"memory": "512MiB", "disk": "1GiB", "accel": "tcg", "image_source": "download"}
    with serve(tree) as srv:
        monkeypatch.setenv("PYD_IMAGE_INDEX", srv.url + "index.json")
        with pytest.raises(ImageError, match="not signed by a trusted key"):
            start_module.start("dl", settings, False, RecordingProgress(), agent=FakeAgent())
    assert vm.calls == [] and not (tmp_path / "cache" / "images").exists()
