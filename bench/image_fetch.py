"""Image download speed and how well the image files compress.

fetch     the newest cached image's files served from loopback (tests/unit/rangeserver.py
          in a process of its own, sendfile), fetched by pyd's transfer (sha256 checked as
          the bytes arrive) and by one `curl -s -o F URL ...` of the same files (no check);
          median over --runs, alternating which goes first; target pyd/curl >= 0.9
compress  each file with gzip -6, xz -6 (lzma), zstd -3 and -19 (the `zstandard` wheel,
          when importable: PYTHONPATH=DIR after `pip install --target DIR zstandard`):
          size, and the decompression speed on arrival
packed    the image published as a release tree (`pyd image publish`, or --tree DIR):
          fetch_files into a fresh cache (packed bytes verified as they arrive, unpacked and
          verified) against `curl` of the same packed files (no check, no unpack) and curl
          followed by `zstd -d`; median over --runs; target pyd/curl >= 0.9
resume    the same tree, the server cutting the largest file at 50 %: the bytes sent after
          the cut (Range resume) over the file's size, target <= 55 %
link      with --rate 25,50,100,200 (MB/s; each connection paced by a token bucket, standing
          in for a real link): fetch_files of the tree (verified and unpacked into a fresh
          cache) against curl of the same packed files and curl of the cached plain files (what
          a client without packing fetches) and `curl | zstd -d` (the unpack streamed as the
          bytes arrive); median over --runs; target pyd/curl packed >= 0.9

  flock /tmp/pyd-vm.lock python bench/image_fetch.py [--runs 5] [--arch x86_64]
                                                     [--only fetch,compress,raw,packed,resume]
                                                     [--tree DIR] [--rate 25,50,100,200]
                                                       [--codecs gzip-6,xz-6,zstd-3,zstd-19]
"""

from __future__ import annotations

import argparse
import gzip
import lzma
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.unit.rangeserver

from tests.unit.rangeserver import Behaviour, serve

from pyd.host.paths import images_dir
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.fetch import fetch_files
from pyd.image.manifest import MANIFEST, Manifest, parse_manifest
from pyd.image.publish import publish
from pyd.image.transfer import download

MB = 1000 * 1000


def _serve(files: dict[str, Path], conn: Connection, behaviour: Behaviour | None = None) -> None:
    with serve(dict(files), behaviour) as srv:
        conn.send(srv.url)
        conn.recv()  # until the parent is done


def _fetch_pyd(image: CachedImage, url: str, out: Path) -> None:
    for name, entry in sorted(image.manifest.files.items()):
        download([url + name], out / name, entry.size, entry.sha256)


def _fetch_curl(image: CachedImage, url: str, out: Path) -> None:
    argv = ["curl", "-s", "--fail"]
    for name in sorted(image.manifest.files):
        argv += ["-o", str(out / name), url + name]
    subprocess.run(argv, check=True)


def _fetch_curl_sha256sum(image: CachedImage, url: str, out: Path) -> None:
    """What a downloader that checks afterwards costs (Lima's way): curl, then sha256sum."""
    _fetch_curl(image, url, out)
    sums = subprocess.run(
        ["sha256sum", *sorted(str(out / n) for n in image.manifest.files)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in sums.splitlines():
        digest, path = line.split(maxsplit=1)
        assert digest == image.manifest.files[Path(path).name].sha256, path


def bench_fetch(image: CachedImage, runs: int) -> None:
    files = {name: image.file(name) for name in image.manifest.files}
    total = image.manifest.total_size
    for path in files.values():  # the page cache holds them for every run alike
        path.read_bytes()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(files, child), daemon=True)
    server.start()
    url = parent.recv()
    ways: dict[str, Callable[[CachedImage, str, Path], None]] = {
        "pyd": _fetch_pyd,
        "curl": _fetch_curl,
        "curl+sha256sum": _fetch_curl_sha256sum,
    }
    times: dict[str, list[float]] = {w: [] for w in ways}
    try:
        for run in range(-1, runs):  # run -1 warms up: the VM's first touch of fresh RAM is slow
            names = list(ways)
            order = names[run % len(names) :] + names[: run % len(names)]
            for way in order:
                with tempfile.TemporaryDirectory(dir=image.path.parent.parent) as out:
                    started = time.monotonic()
                    ways[way](image, url, Path(out))
                    if run >= 0:
                        times[way].append(time.monotonic() - started)
    finally:
        parent.send("done")
        server.join(10)
    print(f"fetch {image.key}: {total / MB:.1f} MB in {len(files)} files, {runs} runs")
    rate = {}
    for way, ts in times.items():
        rate[way] = total / statistics.median(ts) / MB
        print(
            f"  {way:14s} median {statistics.median(ts):6.2f} s = {rate[way]:7.1f} MB/s "
            f"[{min(ts):.2f}-{max(ts):.2f} s]"
        )
    print(f"  ratio pyd/curl {rate['pyd'] / rate['curl']:.2f} (target >= 0.9)")
    print(f"  ratio pyd/(curl+sha256sum) {rate['pyd'] / rate['curl+sha256sum']:.2f}")


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    codecs: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "gzip-6": (lambda d: gzip.compress(d, 6, mtime=0), gzip.decompress),
        "xz-6": (lambda d: lzma.compress(d, preset=6), lzma.decompress),
    }
    try:
        import zstandard
    except ImportError:
        print("  (zstandard is not importable: zstd skipped)")
        return codecs
    for level in (3, 19):
        c = zstandard.ZstdCompressor(level=level, threads=-1)
        codecs[f"zstd-{level}"] = (c.compress, zstandard.ZstdDecompressor().decompress)
    return codecs


def bench_compress(image: CachedImage, only: list[str]) -> None:
    codecs = {k: v for k, v in _codecs().items() if not only or k in only}
    print(f"compress {image.key}: size MB (ratio), compress s, decompress MB/s of output")
    totals = {name: 0 for name in codecs}
    for name, entry in sorted(image.manifest.files.items()):
        data = image.file(name).read_bytes()
        cells = []
        for codec, (compress, decompress) in codecs.items():
            started = time.monotonic()
            packed = compress(data)
            took = time.monotonic() - started
            started = time.monotonic()
            assert decompress(packed) == data
            speed = len(data) / (time.monotonic() - started) / MB
            totals[codec] += min(len(packed), len(data))  # stored plain when it does not pay
            cells.append(
                f"{codec} {len(packed) / MB:6.1f} ({len(packed) / len(data):.2f}) "
                f"{took:5.1f}s {speed:6.0f}MB/s"
            )
        print(f"  {name:13s} {entry.size / MB:6.1f} MB | " + " | ".join(cells), flush=True)
    plain = image.manifest.total_size
    print(f"  download, each file compressed only where it pays (plain {plain / MB:.1f} MB):")
    for codec, size in totals.items():
        print(f"    {codec:8s} {size / MB:6.1f} MB (target <= 200 MB)")


def bench_raw_stream(image: CachedImage) -> None:
    """rootfs.qcow2 compresses per 64 KiB cluster; the same filesystem as one raw stream,
    compressed whole (zstd --long), is what a download could carry instead."""
    if not (shutil.which("qemu-img") and shutil.which("zstd")):
        print("raw stream: needs qemu-img and zstd; skipped")
        return
    with tempfile.TemporaryDirectory(dir=image.path.parent.parent) as tmp:
        raw, packed = Path(tmp) / "rootfs.raw", Path(tmp) / "rootfs.raw.zst"
        qcow2 = image.file("rootfs.qcow2")
        subprocess.run(["qemu-img", "convert", "-O", "raw", qcow2, raw], check=True)
        used = raw.stat().st_blocks * 512
        print(f"raw stream: rootfs {raw.stat().st_size / MB:.0f} MB raw, {used / MB:.0f} MB used")
        for level in ("-9", "-19"):
            started = time.monotonic()
            subprocess.run(
                ["zstd", "-q", "-f", level, "--long=27", "-T0", raw, "-o", packed], check=True
            )
            took = time.monotonic() - started
            started = time.monotonic()
            subprocess.run(
                ["zstd", "-q", "-d", "-f", "--long=27", packed, "-o", f"{raw}.out"], check=True
            )
            back = time.monotonic() - started
            print(
                f"  zstd {level} --long: {packed.stat().st_size / MB:.1f} MB (qcow2 "
                f"{qcow2.stat().st_size / MB:.1f} MB), compress {took:.0f} s, "
                f"decompress {back:.1f} s"
            )


def _tree_files(tree: Path, key: str) -> tuple[Manifest, dict[str, Path]]:
    manifest = parse_manifest((tree / key / MANIFEST).read_text())
    files = {p.name: p for p in (tree / key).iterdir() if not p.name.startswith(".")}
    return manifest, files


def _wire_names(manifest: Manifest) -> list[str]:
    return sorted(e.packed.name if e.packed else n for n, e in manifest.files.items())


def _fetch_tree_pyd(manifest: Manifest, url: str, out: Path) -> None:
    fetch_files(ImageCache(out), manifest, [url + MANIFEST], lambda *a: None)


def _fetch_tree_curl(manifest: Manifest, url: str, out: Path) -> None:
    argv = ["curl", "-s", "--fail"]
    for name in _wire_names(manifest):
        argv += ["-o", str(out / name), url + name]
    subprocess.run(argv, check=True)


def _fetch_tree_curl_zstd(manifest: Manifest, url: str, out: Path) -> None:
    """A shell downloader's way: curl, then unpack (no check)."""
    _fetch_tree_curl(manifest, url, out)
    for name, entry in manifest.files.items():
        if entry.packed:
            subprocess.run(
                [
                    "zstd",
                    "-q",
                    "-d",
                    "--long=27",
                    str(out / entry.packed.name),
                    "-o",
                    str(out / name),
                ],
                check=True,
            )


def _published(image: CachedImage, tree: str | None, keep: str) -> Path:
    if tree:
        return Path(tree)
    out = Path(keep) / "tree"
    started = time.monotonic()
    publish(ImageCache(image.path.parent), out, [image.key], None, lambda line: None)
    print(f"published {image.key} in {time.monotonic() - started:.1f} s")
    return out


def bench_packed(image: CachedImage, tree: Path, runs: int) -> None:
    manifest, files = _tree_files(tree, image.key)
    wire = sum(f.stat().st_size for n, f in files.items() if n != MANIFEST)
    for path in files.values():
        path.read_bytes()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(files, child), daemon=True)
    server.start()
    url = parent.recv()
    ways: dict[str, Callable[[Manifest, str, Path], None]] = {
        "pyd": _fetch_tree_pyd,
        "curl": _fetch_tree_curl,
        "curl+zstd -d": _fetch_tree_curl_zstd,
    }
    times: dict[str, list[float]] = {w: [] for w in ways}
    try:
        for run in range(-1, runs):
            names = list(ways)
            order = names[run % len(names) :] + names[: run % len(names)]
            for way in order:
                with tempfile.TemporaryDirectory(dir=image.path.parent.parent) as out:
                    started = time.monotonic()
                    ways[way](manifest, url, Path(out))
                    if run >= 0:
                        times[way].append(time.monotonic() - started)
    finally:
        parent.send("done")
        server.join(10)
    print(
        f"packed {image.key}: {wire / MB:.1f} MB on the wire, {manifest.total_size / MB:.1f} MB "
        f"unpacked, {runs} runs"
    )
    for way, ts in times.items():
        print(
            f"  {way:14s} median {statistics.median(ts):6.2f} s = "
            f"{wire / statistics.median(ts) / MB:7.1f} MB/s on the wire "
            f"[{min(ts):.2f}-{max(ts):.2f} s]"
        )
    med = {w: statistics.median(ts) for w, ts in times.items()}
    print(f"  ratio pyd/curl {med['curl'] / med['pyd']:.2f} (target >= 0.9)")
    print(f"  ratio pyd/(curl+zstd -d) {med['curl+zstd -d'] / med['pyd']:.2f}")


def bench_resume(image: CachedImage, tree: Path) -> None:
    """The server cuts the largest file at 50 %; the fetch resumes it with Range."""
    manifest, files = _tree_files(tree, image.key)
    sizes = {n: p.stat().st_size for n, p in files.items() if n != MANIFEST}
    largest = max(sizes, key=lambda n: sizes[n])
    total = sum(sizes.values())
    cut_at = sizes[largest] // 2
    behaviour = Behaviour(cut_after=cut_at, cuts=1)
    with (
        tempfile.TemporaryDirectory(dir=image.path.parent.parent) as out,
        serve(dict(files), behaviour) as srv,
    ):
        fetch_files(ImageCache(Path(out)), manifest, [srv.url + MANIFEST], lambda *a: None)
        sent = srv.stats.body_bytes
        ranged = [r for r in srv.stats.requests if r[1]]
    after = sizes[largest] - cut_at + (sent - total)  # the rest of it, and anything sent twice
    print(
        f"resume: {largest} ({sizes[largest] / MB:.1f} MB) cut at 50 %, resumed with "
        f"{ranged[0][1] if ranged else 'no Range'}: {after / sizes[largest]:.1%} of it sent "
        f"after the cut (target <= 55 %); {sent / MB:.1f} MB sent for the {total / MB:.1f} MB "
        "download"
    )


def _fetch_link_curl(names: list[str], url: str, out: Path) -> None:
    argv = ["curl", "-s", "--fail"]
    for name in names:
        argv += ["-o", str(out / name.replace("/", "_")), url + name]
    subprocess.run(argv, check=True)


def _fetch_link_curl_zstd(manifest: Manifest, url: str, out: Path) -> None:
    """Each packed file decompressed as it arrives (`curl | zstd -d`), one connection per
    file as pyd: what an unpack that streams, rather than follows the download, costs."""
    for name, entry in sorted(manifest.files.items()):
        if not entry.packed:
            _fetch_link_curl([f"tree/{name}"], url, out)
            continue
        with subprocess.Popen(
            ["curl", "-s", "--fail", url + f"tree/{entry.packed.name}"], stdout=subprocess.PIPE
        ) as curl:
            subprocess.run(
                ["zstd", "-q", "-d", "--long=27", "-o", str(out / name)],
                stdin=curl.stdout,
                check=True,
            )
        assert curl.returncode == 0, name


def bench_link(image: CachedImage, tree: Path, rates: list[float], runs: int) -> None:
    """One server (its own process) per rate serves both the tree (tree/NAME) and the
    cached plain files (plain/NAME), each connection paced to the rate."""
    manifest, packed = _tree_files(tree, image.key)
    files = {f"tree/{n}": p for n, p in packed.items()}
    files |= {f"plain/{n}": image.file(n) for n in image.manifest.files}
    for path in files.values():
        path.read_bytes()
    wire = {
        "pyd": sum(p.stat().st_size for n, p in packed.items() if n != MANIFEST),
        "curl packed": sum(p.stat().st_size for n, p in packed.items() if n != MANIFEST),
        "curl plain": image.manifest.total_size,
    }
    print(
        f"link {image.key}: packed {wire['pyd'] / MB:.1f} MB on the wire "
        f"({manifest.total_size / MB:.1f} MB unpacked), plain {wire['curl plain'] / MB:.1f} "
        f"MB; {runs} runs; times to the files on disk (pyd: verified, in the cache)"
    )
    print(
        f"  {'MB/s':>5s} | {'pyd':>6s} {'curl packed':>11s} {'curl plain':>10s} "
        f"{'curl|zstd':>9s} | pyd/curl packed  pyd/curl plain  link used by pyd"
    )
    for rate in rates:
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.Process(
            target=_serve, args=(files, child, Behaviour(rate=rate * MB)), daemon=True
        )
        server.start()
        url = parent.recv()
        ways: dict[str, Callable[[str, Path], None]] = {
            "pyd": lambda u, out: _fetch_tree_pyd(manifest, u + "tree/", out),
            "curl packed": lambda u, out: _fetch_link_curl(
                [f"tree/{n}" for n in _wire_names(manifest)], u, out
            ),
            "curl plain": lambda u, out: _fetch_link_curl(
                [f"plain/{n}" for n in sorted(image.manifest.files)], u, out
            ),
            "curl|zstd": lambda u, out: _fetch_link_curl_zstd(manifest, u, out),
        }
        times: dict[str, list[float]] = {w: [] for w in ways}
        try:
            for run in range(-1, runs):
                names = list(ways)
                for way in names[run % len(names) :] + names[: run % len(names)]:
                    with tempfile.TemporaryDirectory(dir=image.path.parent.parent) as out:
                        started = time.monotonic()
                        ways[way](url, Path(out))
                        if run >= 0:
                            times[way].append(time.monotonic() - started)
        finally:
            parent.send("done")
            server.join(10)
        med = {w: statistics.median(ts) for w, ts in times.items()}
        spread = " ".join(f"{w} [{min(ts):.2f}-{max(ts):.2f}]" for w, ts in times.items())
        print(
            f"  {rate:5.0f} | {med['pyd']:5.2f}s {med['curl packed']:10.2f}s "
            f"{med['curl plain']:9.2f}s {med['curl|zstd']:8.2f}s | "
            f"{med['curl packed'] / med['pyd']:15.2f} "
            f"{med['curl plain'] / med['pyd']:15.2f} {wire['pyd'] / med['pyd'] / MB / rate:16.0%}"
            f"   {spread}",
            flush=True,
        )
    print("  target pyd/curl packed >= 0.9")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--arch", default="x86_64")
    ap.add_argument("--only", default="fetch,compress,raw,packed,resume")
    ap.add_argument("--codecs", default="", help="e.g. zstd-3,xz-6 (default: all)")
    ap.add_argument("--tree", help="a release tree `pyd image publish` wrote (default: a new one)")
    ap.add_argument("--rate", default="", help="MB/s per connection for `link`, e.g. 25,50,100")
    args = ap.parse_args()
    image = ImageCache(images_dir()).find(args.arch)
    if image is None:
        sys.exit(f"no cached {args.arch} image: run `pyd image build --arch {args.arch}` first")
    only = args.only.split(",")
    rates = [float(r) for r in args.rate.split(",") if r]
    if rates and "link" not in only:
        only.append("link")
    if "fetch" in only:
        bench_fetch(image, args.runs)
    if "compress" in only:
        bench_compress(image, [c for c in args.codecs.split(",") if c])
    if "raw" in only:
        bench_raw_stream(image)
    if "packed" in only or "resume" in only or "link" in only:
        with tempfile.TemporaryDirectory(dir=image.path.parent.parent) as keep:
            tree = _published(image, args.tree, keep)
            if "packed" in only:
                bench_packed(image, tree, args.runs)
            if "resume" in only:
                bench_resume(image, tree)
            if "link" in only:
                bench_link(image, tree, rates or [25, 50, 100, 200], args.runs)


if __name__ == "__main__":
    main()
