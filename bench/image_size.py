"""Image size and cached-rebuild time: `python bench/image_size.py [--runs 5] [--arch A]`."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.recipe import default_suite, recipe_dir

MB = 1000 * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--arch", help="guest architecture (default: the host's)")
    args = ap.parse_args()
    arch = get_arch(args.arch)
    image, _ = build_image(
        ImageCache(images_dir()), arch, default_suite(), recipe_dir(), progress=print
    )
    print(f"image {image.key}")
    for name, entry in sorted(image.manifest.files.items()):
        print(f"  {name:14s} {entry.size / MB:8.1f} MB")
    rootfs = image.manifest.files["rootfs.qcow2"].size
    print(f"rootfs.qcow2 {rootfs / MB:.1f} MB, target <= 250 MB")
    # The whole command, as a user runs it: interpreter start, recipe hash, cache lookup.
    times = []
    for _ in range(args.runs):
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "pyd", "image", "build", "--arch", arch.name],
            check=True,
            capture_output=True,
        )
        times.append(time.monotonic() - started)
    print(
        f"cached `pyd image build`: median {statistics.median(times):.2f}s "
        f"[{min(times):.2f}-{max(times):.2f}] over {args.runs} runs, target <= 2 s"
    )


if __name__ == "__main__":
    main()
