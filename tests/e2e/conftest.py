from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.recipe import default_suite, recipe_dir
from pyd.vm.throwaway import booted, prepare, wait_for_docker
from pyd.vm.throwaway_qemu import DirectVM
from tests.e2e.pydcli import leftover_test_domains, remove_domain


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_domains(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Domains a killed earlier run left behind are removed before any test starts."""
    try:
        leftovers = leftover_test_domains(tmp_path_factory.getbasetemp())
    except Exception as e:  # libvirt absent or down: the libvirt tests say so themselves
        print(f"leftover domains not checked: {e}")
        return
    for name in leftovers:
        print(f"removing {name}, left by an earlier test run that was killed")
        remove_domain(name)


@pytest.fixture(scope="session")
def image() -> CachedImage:
    """The guest image of this checkout's recipe: built once, then taken from the cache."""
    built, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    return built


@pytest.fixture(scope="session")
def image_arm64() -> CachedImage:
    """The aarch64 guest image (built under qemu-user-static here, ~5 min), then cached."""
    built, _ = build_image(
        ImageCache(images_dir()), get_arch("aarch64"), default_suite(), recipe_dir(), progress=print
    )
    return built


@pytest.fixture(scope="session")
def guest(
    image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DirectVM, paramiko.SSHClient]]:
    """One running guest shared by the tests that do not restart or damage it."""
    files = prepare(tmp_path_factory.mktemp("guest") / "shared", image)
    with booted(files, image) as (vm, client):
        wait_for_docker(client)
        yield vm, client


@pytest.fixture
def ssh(guest: tuple[DirectVM, paramiko.SSHClient]) -> paramiko.SSHClient:
    return guest[1]


@pytest.fixture(scope="session")
def busybox_static() -> Path:
    path = Path("/bin/busybox")
    if not path.exists():
        pytest.fail("busybox-static is not installed (apt-get install busybox-static)")
    return path


# ELF e_machine of AArch64: what proves the extracted file is the arm64 build.
_EM_AARCH64 = 183


def _is_aarch64_elf(path: Path) -> bool:
    head = path.read_bytes()[:20]
    return head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == _EM_AARCH64


@pytest.fixture(scope="session")
def busybox_arm64() -> Path:
    """An aarch64 static busybox from Debian's busybox-static:arm64, downloaded once with
    apt and kept in ~/.cache/pyd/test (no registry, no project website)."""
    cached = Path.home() / ".cache" / "pyd" / "test" / "busybox-arm64"
    if cached.exists() and _is_aarch64_elf(cached):
        return cached
    foreign = subprocess.run(
        ["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=False
    ).stdout.split()
    if "arm64" not in foreign:
        pytest.fail(
            "dpkg has no arm64 architecture: run packaging/linux/install-deps "
            "(or: dpkg --add-architecture arm64 && apt-get update)"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        work = Path(tmp)
        # apt drops privileges to _apt for downloads; a directory it may write avoids a warning.
        work.chmod(0o777)
        dl = subprocess.run(
            ["apt-get", "download", "-q", "busybox-static:arm64"],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = list(work.glob("busybox-static_*_arm64.deb"))
        if dl.returncode != 0 or len(debs) != 1:
            pytest.fail(
                f"apt-get download busybox-static:arm64 failed: {dl.stderr.strip()}\n"
                "hint: apt-get update after dpkg --add-architecture arm64 "
                "(packaging/linux/install-deps does both)"
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], check=True)
        extracted = work / "root" / "bin" / "busybox"
        if not _is_aarch64_elf(extracted):
            pytest.fail(f"{debs[0].name} holds no aarch64 busybox at /bin/busybox")
        shutil.copy(extracted, work / "busybox")
        os.replace(work / "busybox", cached)  # atomic: parallel sessions see all or nothing
    return cached
