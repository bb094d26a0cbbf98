"""`pyd docker` through the guest's docker CLI against OpenSSH, same VM, same run (TCG here):

  pyd      `pyd docker --via-guest version`: a new `pyd` process, whose command the host
           agent runs on its open SSH connection (the exec socket: what macOS and Linux get)
  ssh      `ssh -i KEY -p PORT root@127.0.0.1 docker version` with the system's OpenSSH client
  pyd-own  the same `pyd docker`, with the exec socket moved away for the command: it opens
           an SSH connection of its own (paramiko), as with an older agent
  pyd-framed  the same `pyd docker` through the agent with PYD_EXEC_FRAMED=1: its streams go
           as frames over the socket (what Windows gets, over a named pipe) instead of
           descriptors

Both are timed from process start to exit, in interleaved rounds (the order alternates).
Then a 50 MB random file through `docker run -i --rm IMG cat`, stdin to stdout, by both
(sha256 must match; MB/s is the file's size over the time, each byte crossing twice).

    python bench/guest_docker.py [--runs 10] [--mb 50] [--blob-runs 1]
                                 [--ways pyd,ssh,pyd-own,pyd-framed]

Prints the medians, min-max and the ratios pyd/ssh and pyd-own/ssh of the medians (target
<= 1.1), and pyd-framed/pyd (target <= 1.1). The round trip compares pyd, ssh and
pyd-framed, and reports how much the agent's RSS grew during each (its peak over its RSS
before, sampled every 20 ms): frames must stream, not pile up.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests' helpers

from tests.rss import rss_growth

from busybox_image import build_busybox_image
from pyd.instance.files import InstanceFiles
from pyd.instance.state import load_state
from pyd.ssh.openssh import ssh_argv

NAME = "bench-guestdocker"
IMAGE = "pyd-bench-guestdocker-busybox"
WAYS = ("pyd", "ssh", "pyd-own", "pyd-framed")
BLOB_WAYS = ("pyd", "ssh", "pyd-framed")


def run(env: dict[str, str], *argv: str) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr}")
    return r.stdout


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env |= {
            "PYD_HOME": str(work / "home"),
            "DOCKER_CONFIG": str(work / "docker"),
            "DOCKER_BUILDKIT": "0",
        }
        self.pyd = [sys.executable, "-m", "pyd"]
        self.files = InstanceFiles(work / "home" / "instances" / NAME)
        ssh = shutil.which("ssh")
        if ssh is None:
            raise SystemExit("no OpenSSH client (ssh) on PATH to compare with")
        self.ssh = ssh

    def start(self) -> None:
        t0 = time.monotonic()
        run(self.env, *self.pyd, "start", "-n", NAME)
        print(f"pyd start: {time.monotonic() - t0:.1f} s")
        build_busybox_image(self.env, self.work, IMAGE)
        run(self.env, *self.pyd, "ssh", "-n", NAME, "--", "true")  # writes known_hosts

    def stop(self) -> None:
        subprocess.run([*self.pyd, "delete", "-f", "-n", NAME], env=self.env, capture_output=True)

    def argv(self, way: str, docker_args: list[str]) -> list[str]:
        if way in ("pyd", "pyd-own", "pyd-framed"):
            return [*self.pyd, "docker", "-n", NAME, "--via-guest", *docker_args]
        state = load_state(self.files.state)
        assert state is not None
        line = " ".join(["docker", *docker_args])
        return ssh_argv(
            self.ssh, state.ssh_port, self.files.client_key, self.files.known_hosts, [line], False
        )

    def timed(self, way: str, docker_args: list[str], stdin: Path | None = None,
              stdout: Path | None = None) -> float:  # fmt: skip
        """Seconds from start to exit of one command; it must succeed."""
        with (
            open(stdin or os.devnull, "rb") as i,
            open(stdout or os.devnull, "wb") as o,
            tempfile.TemporaryFile() as e,
        ):
            argv = self.argv(way, docker_args)
            with self._own_connection(way == "pyd-own"):
                t0 = time.perf_counter()
                code = subprocess.run(argv, stdin=i, stdout=o, stderr=e, env=self.env_of(way),
                                      cwd=self.work, timeout=1800).returncode  # fmt: skip
                seconds = time.perf_counter() - t0
            if code != 0:
                e.seek(0)
                raise SystemExit(f"{way} {docker_args} exited {code}: {e.read().decode()}")
        return seconds


    def env_of(self, way: str) -> dict[str, str]:
        return self.env | {"PYD_EXEC_FRAMED": "1"} if way == "pyd-framed" else self.env

    def agent(self) -> psutil.Process:
        root = str(self.files.root)
        for p in psutil.process_iter(["cmdline"]):
            cmdline = p.info["cmdline"] or []
            if "pyd.agent" in cmdline and root in cmdline:
                return p
        raise SystemExit("the instance's agent is not running")

    @contextlib.contextmanager
    def _own_connection(self, hidden: bool) -> Iterator[None]:
        """With `hidden`, the agent's exec socket is not where `pyd docker` looks."""
        if not hidden:
            yield
            return
        away = self.files.exec_sock.with_name("exec.sock.away")
        self.files.exec_sock.rename(away)
        try:
            yield
        finally:
            away.rename(self.files.exec_sock)


def interleaved(
    runs: int, measure: Callable[[str], float], ways: Sequence[str]
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {w: [] for w in ways}
    for r in range(runs):
        for way in ways if r % 2 == 0 else ways[::-1]:
            results[way].append(measure(way))
        print(f"round {r + 1}: " + ", ".join(f"{w} {results[w][-1]:.3f} s" for w in ways),
              flush=True)  # fmt: skip
    return results


def summary(label: str, results: dict[str, list[float]], unit: str = "s") -> dict[str, float]:
    med = {w: statistics.median(v) for w, v in results.items()}
    for way, values in results.items():
        print(f"  {label} {way:4} median {med[way]:.3f} {unit} "
              f"[{min(values):.3f}-{max(values):.3f}]")  # fmt: skip
    return med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--blob-runs", type=int, default=1)
    ap.add_argument("--ways", default=",".join(WAYS), help="of " + ",".join(WAYS))
    args = ap.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    if not set(ways) <= set(WAYS) or "ssh" not in ways:
        ap.error(f"--ways: a list of {', '.join(WAYS)}, with ssh (the baseline)")
    with tempfile.TemporaryDirectory(prefix="pyd-bench-guestdocker-") as tmp:
        bench = Bench(Path(tmp))
        blob, back = bench.work / "blob", bench.work / "back"
        blob.write_bytes(os.urandom(args.mb * 10**6))
        want = hashlib.sha256(blob.read_bytes()).hexdigest()
        try:
            bench.start()
            for way in ways:  # one of each first: page cache, guest caches
                bench.timed(way, ["version"])
            print(f"\n`docker version`, {args.runs} interleaved rounds:")
            version = interleaved(args.runs, lambda way: bench.timed(way, ["version"]), ways)

            agent = bench.agent()
            growth: dict[str, list[int]] = {}

            def round_trip(way: str) -> float:
                with rss_growth(agent, growth.setdefault(way, [])):
                    seconds = bench.timed(way, ["run", "-i", "--rm", IMAGE, "cat"], blob, back)
                if hashlib.sha256(back.read_bytes()).hexdigest() != want:
                    raise SystemExit(f"{way}: the {args.mb} MB came back different")
                back.unlink()
                return seconds

            print(f"\n{args.mb} MB stdin -> `docker run -i cat` -> stdout, {args.blob_runs} "
                  "interleaved rounds (sha256 matched each time):")  # fmt: skip
            blob_s = interleaved(args.blob_runs, round_trip, [w for w in BLOB_WAYS if w in ways])
        finally:
            bench.stop()
    print(f"\n`docker version` ({args.runs} runs): median [min-max]")
    med = summary("version", version)
    for way in ways:
        if way != "ssh":
            print(f"  ratio {way}/ssh {med[way] / med['ssh']:.3f}  (target <= 1.1)")
    if {"pyd", "pyd-framed"} <= set(ways):
        print(f"  ratio pyd-framed/pyd {med['pyd-framed'] / med['pyd']:.3f}  (target <= 1.1)")
    print(f"\n{args.mb} MB round trip ({args.blob_runs} runs), sha256 equal:")
    mbps = {w: [args.mb / s for s in v] for w, v in blob_s.items()}
    blob_med = summary("seconds", blob_s)
    summary("MB/s   ", mbps, "MB/s")
    if {"pyd", "pyd-framed"} <= set(blob_s):
        ratio = blob_med["pyd-framed"] / blob_med["pyd"]
        print(f"  ratio pyd-framed/pyd {ratio:.3f}  (target <= 1.1)")
    for way, grew in growth.items():
        print(f"  agent RSS growth during {way}: max {max(grew) / 2**20:.1f} MiB "
              f"(runs: {', '.join(f'{g / 2**20:.1f}' for g in grew)})")  # fmt: skip


if __name__ == "__main__":
    main()
