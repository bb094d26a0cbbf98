"""`build_image` against a tiny stand-in recipe: caching by recipe hash, manifests, and a
failed build leaving nothing behind. The real recipe is exercised by the e2e tests."""

import time
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.errors import ImageError
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.verify import image_problems

RECIPE = """#!/bin/sh
set -e
while [ $# -gt 0 ]; do case "$1" in --out) out=$2; shift 2;; *) shift;; esac; done
echo "==> pretend to bootstrap"
echo "noise that is not a phase"
printf kernel > "$out/vmlinuz"; printf initrd > "$out/initrd.img"; printf root > "$out/rootfs.qcow2"
echo '{"kernel": "6.12", "docker": "26.1.5"}' > "$out/versions.json"
echo built >> "$(dirname "$0")/../runs"
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    d = tmp_path / "recipe"
    d.mkdir()
    (d / "build").write_text(RECIPE)
    (d / "build").chmod(0o755)
    return d


def test_build_caches_by_recipe_hash(tmp_path: Path, recipe: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    phases: list[str] = []
    image, built = build_image(cache, get_arch("x86_64"), "trixie", recipe, phases.append)
    assert built and phases == ["==> pretend to bootstrap", "==> manifest"]
    assert image_problems(image.path, image.manifest) == []
    assert image.manifest.versions == {"kernel": "6.12", "docker": "26.1.5"}
    assert not (image.path / "versions.json").exists()

    started = time.monotonic()
    again, built_again = build_image(cache, get_arch("x86_64"), "trixie", recipe, phases.append)
    assert not built_again and again.key == image.key
    assert time.monotonic() - started < 2
    assert (tmp_path / "runs").read_text() == "built\n"

    (recipe / "packages.txt").write_text("one-more-package\n")
    changed, rebuilt = build_image(cache, get_arch("x86_64"), "trixie", recipe, phases.append)
    assert rebuilt and changed.key != image.key


def test_failed_build_reports_its_output_and_caches_nothing(tmp_path: Path, recipe: Path) -> None:
    (recipe / "build").write_text("#!/bin/sh\necho 'E: cannot reach the archive'\nexit 3\n")
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError, match=r"exit 3\):\nE: cannot reach the archive"):
        build_image(cache, get_arch("x86_64"), "trixie", recipe, lambda line: None)
    assert cache.entries() == []
    assert [p.name for p in cache.root.iterdir()] == [".lock"]


def test_a_second_commit_never_replaces_an_image_instances_may_be_based_on(
    tmp_path: Path, recipe: Path
) -> None:
    cache = ImageCache(tmp_path / "cache")
    image, _ = build_image(cache, get_arch("x86_64"), "trixie", recipe, lambda line: None)
    before = image.file("rootfs.qcow2").stat().st_ino
    with cache.staging() as staging, pytest.raises(ImageError, match="already in the cache"):
        cache.commit(staging, image.key, image.manifest)
    assert image.file("rootfs.qcow2").stat().st_ino == before
    assert image_problems(image.path, image.manifest) == []
