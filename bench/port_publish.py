"""Published ports through a real `pyd start` instance (TCG here):

- the delay from `docker run -d -p H:80 …` returning to http://127.0.0.1:H answering
  (target: median <= 1 s);
- 100 concurrent downloads of one file through one forwarded port: none may fail or differ.

    python bench/port_publish.py [--runs 10] [--concurrent 100]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from busybox_image import bench_env, build_busybox_image
from pyd.host.loopback import free_loopback_port

NAME = "bench-ports"
IMAGE = "pyd-bench-busybox"


def run(env: dict[str, str], *argv: str) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr}")
    return r.stdout


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return bytes(r.read())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--concurrent", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyd-bench-ports-") as tmp:
        work = Path(tmp)
        env = bench_env(work)
        pyd = [sys.executable, "-m", "pyd"]
        try:
            run(env, *pyd, "start", "-n", NAME)
            blob = "RUN mkdir /www && head -c 1048576 /dev/urandom > /www/blob"
            build_busybox_image(env, work, IMAGE, lines=(blob,))
            delays = []
            for i in range(args.runs):
                port = free_loopback_port()
                run(env, "docker", "run", "-d", "--name", f"w{i}", "-p", f"{port}:80", IMAGE,
                    "httpd", "-f", "-p", "80", "-h", "/www")  # fmt: skip
                t0 = time.monotonic()
                while True:
                    try:
                        get(f"http://127.0.0.1:{port}/blob")
                        break
                    except OSError:
                        time.sleep(0.01)
                delays.append(time.monotonic() - t0)
                print(f"run {i + 1}: answered {delays[-1]:.3f} s after `docker run` returned")
                if i < args.runs - 1:
                    run(env, "docker", "rm", "-f", f"w{i}")
            print(
                f"\n`docker run -d -p` to the host port answering ({args.runs} runs): median "
                f"{statistics.median(delays):.3f} s [{min(delays):.3f}-{max(delays):.3f}] "
                "(target <= 1 s)"
            )
            want = run(env, "docker", "exec", f"w{args.runs - 1}", "sha256sum", "/www/blob")
            want = want.split()[0]
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.concurrent) as pool:
                futures = [
                    pool.submit(get, f"http://127.0.0.1:{port}/blob")
                    for _ in range(args.concurrent)
                ]
                failed: list[str] = []
                corrupted = 0
                for f in futures:
                    try:
                        corrupted += hashlib.sha256(f.result()).hexdigest() != want
                    except OSError as e:
                        failed.append(str(e))
            print(
                f"{args.concurrent} concurrent 1 MiB downloads through one port: {len(failed)} "
                f"failed, {corrupted} corrupted, {time.monotonic() - t0:.1f} s in all"
            )
            for reason in sorted(set(failed)):
                print(f"  failed: {reason}")
        finally:
            subprocess.run([*pyd, "delete", "-f", "-n", NAME], env=env, check=False)


if __name__ == "__main__":
    main()
