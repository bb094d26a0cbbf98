"""A full image build per architecture, side by side: wall time, each phase, each file's size.

    sudo python bench/image_build.py [--arch x86_64 --arch aarch64] [--keep]

Builds into a scratch cache (the user's cache is neither used nor filled), so every run
builds from Debian's archive. The architecture that is not the host's is built under QEMU's
user-mode emulation (see pyd/image/binfmt.py).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from pyd.config.arches import get_arch
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.recipe import default_suite, recipe_dir

MB = 1000 * 1000
ROOTFS_BUDGET_MB = 250


def build_one(arch_name: str, cache_root: Path) -> dict[str, float]:
    arch = get_arch(arch_name)
    started = time.monotonic()
    phases: list[tuple[float, str]] = []

    def progress(line: str) -> None:
        phases.append((time.monotonic() - started, line.removeprefix("==> ")))

    image, _ = build_image(ImageCache(cache_root), arch, default_suite(), recipe_dir(), progress)
    total = time.monotonic() - started
    print(f"{arch.name}: built {image.key} in {total:.1f}s")
    for (at, name), nxt in zip(phases, [*(p[0] for p in phases[1:]), total], strict=True):
        print(f"  {at:7.1f}s +{nxt - at:6.1f}s  {name}")
    sizes = {name: e.size / MB for name, e in sorted(image.manifest.files.items())}
    for name, mb in sizes.items():
        print(f"  {name:14s} {mb:8.1f} MB")
    print(f"  rootfs.qcow2 budget {ROOTFS_BUDGET_MB} MB: {sizes['rootfs.qcow2']:.1f} MB")
    return {"total_s": total, **sizes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", action="append", help="repeatable (default: x86_64 and aarch64)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch cache and print it")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pyd-image-build-bench-", dir=Path.home()))
    try:
        results = {a: build_one(a, root) for a in args.arch or ["x86_64", "aarch64"]}
    finally:
        if args.keep:
            print(f"images kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    names = sorted({k for r in results.values() for k in r})
    print(f"{'':14s}" + "".join(f"{a:>12s}" for a in results))
    for k in names:
        print(f"{k:14s}" + "".join(f"{r.get(k, 0.0):12.1f}" for r in results.values()))


if __name__ == "__main__":
    main()
