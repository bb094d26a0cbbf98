"""Is the guest image reproducible in its contents? Builds this checkout's recipe again into a
scratch cache and compares it with the image in the user's cache (built first if missing):
kernel and initrd byte for byte, the root filesystem by its content listing (type, mode,
owner, size, sha256 or link target of every path; pyd/image/contents.py). Prints the build
time, the number of paths compared and the first differences.

    sudo python bench/image_repro.py [--arch aarch64]

tests/e2e/test_image_reproducible.py checks the host's architecture in CI; this is the same
check for the other one (~5 min for aarch64 under qemu-user-static). If Debian's packages
changed since the cached image was built, a third build is compared with the second.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pyd.config.arches import get_arch
from pyd.errors import PydError
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.contents import compare_images
from pyd.image.recipe import default_suite, recipe_dir


def build_into(root: Path, arch_name: str) -> tuple[CachedImage, float]:
    started = time.monotonic()
    image, _ = build_image(
        ImageCache(root), get_arch(arch_name), default_suite(), recipe_dir(), progress=print
    )
    return image, time.monotonic() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default=get_arch().name)
    args = ap.parse_args()
    reference, _ = build_into(images_dir(), args.arch)
    scratch = Path(tempfile.mkdtemp(prefix="pyd-image-repro-", dir=Path.home()))
    try:
        again, seconds = build_into(scratch / "a", args.arch)
        print(f"{args.arch}: second build {again.key} in {seconds:.1f}s")
        started = time.monotonic()
        result = compare_images(reference, again)
        if result.differences and result.packages_changed:
            print(f"Debian's packages changed since {reference.key}; comparing two fresh builds")
            reference, (again, seconds) = again, build_into(scratch / "b", args.arch)
            print(f"{args.arch}: third build in {seconds:.1f}s")
            started = time.monotonic()
            result = compare_images(reference, again)
        print(f"compared {result.entries} paths in {time.monotonic() - started:.1f}s")
        if result.differences:
            print(f"DIFFERENT: {reference.path} / {again.path}")
            print("\n".join(f"  {d}" for d in result.differences))
            return 1
        print("same kernel, initrd and root filesystem contents")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PydError as e:
        print(f"error: {e.message}" + (f"\nhint: {e.hint}" if e.hint else ""), file=sys.stderr)
        sys.exit(e.exit_code)
