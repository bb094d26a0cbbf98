"""Image size and cached-rebuild time: `python bench/image_size.py [--runs 5] [--arch A]`.

`--transfer [--levels 3,9,19]` measures instead what a release tree carries per cached image
(newest per arch, or --arch): for each file its size, packed size (image/packing.py, zstd
with a 128 MiB window) and the time to pack and to unpack (with the sha256 check the client
does); the rootfs (a) as cached (zstd-compressed qcow2 clusters) and (b) re-written
uncompressed by `qemu-img convert -O qcow2`, as `pyd image publish` does. Target: a
download <= 200 MB per arch."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.digest import sha256_file
from pyd.image.manifest import FileEntry
from pyd.image.packing import pack, unpack
from pyd.image.recipe import default_suite, recipe_dir

MB = 1000 * 1000


def _pack_row(label: str, src: Path, tmp: Path, level: int) -> int:
    """Packs and unpacks `src` once; prints a row; the bytes a download carries for it."""
    entry = FileEntry(src.stat().st_size, sha256_file(src))
    started = time.monotonic()
    packed = pack(src, tmp / "packed.zst", level=level)
    took = time.monotonic() - started
    started = time.monotonic()
    unpack(tmp / "packed.zst", tmp / "unpacked", FileEntry(entry.size, entry.sha256, packed))
    back = time.monotonic() - started
    (tmp / "unpacked").unlink()
    (tmp / "packed.zst").unlink()
    print(
        f"  {label:28s} {entry.size / MB:7.1f} MB -> {packed.size / MB:7.1f} MB "
        f"({packed.size / entry.size:.2f}) pack {took:6.1f} s, unpack {back:5.2f} s "
        f"({entry.size / back / MB:.0f} MB/s out)",
        flush=True,
    )
    return min(packed.size, entry.size)  # published plain when packing does not pay


def transfer(image: CachedImage, levels: list[int]) -> None:
    print(f"image {image.key}: per file, zstd --long=27 at levels {levels}")
    with tempfile.TemporaryDirectory(dir=image.path.parent.parent) as t:
        tmp = Path(t)
        plain = tmp / "rootfs-plain.qcow2"
        started = time.monotonic()
        subprocess.run(
            ["qemu-img", "convert", "-O", "qcow2", image.file("rootfs.qcow2"), plain], check=True
        )
        print(f"  qemu-img convert -O qcow2 (uncompressed): {time.monotonic() - started:.1f} s")
        for level in levels:
            total_a = total_b = 0
            for name in sorted(image.manifest.files):
                size = _pack_row(f"{name} -{level}", image.file(name), tmp, level)
                total_a += size
                if name == "rootfs.qcow2":
                    size = _pack_row(f"{name} uncompressed -{level}", plain, tmp, level)
                total_b += size
            print(
                f"  level {level}: download (a) rootfs as cached {total_a / MB:.1f} MB, "
                f"(b) rootfs re-written {total_b / MB:.1f} MB (target <= 200 MB)"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--arch", help="guest architecture (default: the host's)")
    ap.add_argument("--transfer", action="store_true", help="packed sizes of cached images")
    ap.add_argument("--levels", default="9", help="zstd levels for --transfer, e.g. 3,9,19")
    args = ap.parse_args()
    if args.transfer:
        cache = ImageCache(images_dir())
        arches = [args.arch] if args.arch else sorted({e.manifest.arch for e in cache.entries()})
        for name in arches:
            found = cache.find(name)
            if found is None:
                sys.exit(f"no cached {name} image: run `pyd image build --arch {name}` first")
            transfer(found, [int(x) for x in args.levels.split(",")])
        return
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
