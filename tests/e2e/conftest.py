from __future__ import annotations

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def image() -> CachedImage:
    """The guest image of this checkout's recipe: built once, then taken from the cache."""
    built, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
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
