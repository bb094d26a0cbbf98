"""`pyd tray` at idle (issue 20's target: <= 1 % CPU and <= 60 MB): the tray runs under Xvfb
with trayer as the tray host, against a real running instance, and once its icon says
"running" its CPU time and resident memory are measured over --seconds (psutil: user +
system time of the tray's process and of its ended children, the `pyd list` reads, over the
wall time; RSS sampled each second, the largest).

    python bench/tray_idle.py [--seconds 60] [--name bench-tray]

Run under the machine-wide VM lock. With PYD_HOME set and --name naming a running instance
there, that instance is used as it is; otherwise a temporary PYD_HOME is made, the instance
started (--cpus 1 --memory 1GiB) and deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e's desktop helper
from tests.e2e.xdesktop import Desktop, xdesktop

CPU_TARGET = 1.0  # percent of one core
RSS_TARGET = 60.0  # MiB


def pyd(env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "pyd", *args], env=env, capture_output=True, text=True, timeout=900
    )
    if r.returncode != 0:
        raise SystemExit(f"pyd {' '.join(args)} failed:\n{r.stderr}")
    return r.stdout


def await_title(desktop: Desktop, want: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while True:
        found = desktop.window_titled("pyd:")
        if found and found[0] == want:
            return
        if time.monotonic() > end:
            raise SystemExit(f"the tray's title is {found and found[0]!r}, not {want!r}")
        time.sleep(0.2)


def cpu_seconds(proc: psutil.Process) -> tuple[float, float]:
    """The tray's own CPU time, and its ended children's (its `pyd list` reads)."""
    t = proc.cpu_times()
    return t.user + t.system, t.children_user + t.children_system


def measure(proc: psutil.Process, seconds: float) -> tuple[float, float, float, float]:
    """Over `seconds`: CPU percent of one core (the tray and its reads), the reads' share,
    the busiest second's CPU (ms) and the largest RSS (MiB)."""
    own0, kids0 = cpu_seconds(proc)
    wall0 = time.monotonic()
    rss = peak = 0.0
    last = own0 + kids0
    end = wall0 + seconds
    while time.monotonic() < end:
        rss = max(rss, proc.memory_info().rss / 2**20)
        time.sleep(1.0)
        now = sum(cpu_seconds(proc))
        peak, last = max(peak, now - last), now
    own, kids = cpu_seconds(proc)
    wall = time.monotonic() - wall0
    total = own - own0 + kids - kids0
    return 100 * total / wall, 100 * (kids - kids0) / wall, 1000 * peak, rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--name", default="bench-tray")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pyd-bench-tray-"))
    env = dict(os.environ)
    made = "PYD_HOME" not in env
    if made:
        env.update(PYD_HOME=str(work / "home"), DOCKER_CONFIG=str(work / "docker-config"))
    try:
        if made:
            t = time.monotonic()
            pyd(env, "start", "-n", args.name, "--cpus", "1", "--memory", "1GiB")
            print(f"started {args.name} in {time.monotonic() - t:.1f} s", flush=True)
        with xdesktop(work) as desktop:
            tray = subprocess.Popen(
                [sys.executable, "-m", "pyd", "tray"], env={**env, **desktop.env()}
            )
            try:
                await_title(desktop, f"pyd: {args.name} running", 60)
                time.sleep(5)  # past the start-up's imports and first reads
                cpu, reads, peak, rss = measure(psutil.Process(tray.pid), args.seconds)
            finally:
                subprocess.run([sys.executable, "-m", "pyd", "tray", "--invoke", "quit"], env=env)
                try:
                    tray.wait(15)
                except subprocess.TimeoutExpired:
                    tray.kill()
        ok = cpu <= CPU_TARGET and rss <= RSS_TARGET
        print(
            f"tray idle over {args.seconds:.0f} s: CPU {cpu:.2f} % (target <= {CPU_TARGET} %; "
            f"its pyd list reads {reads:.2f} %, busiest second {peak:.0f} ms), "
            f"RSS max {rss:.1f} MiB (target <= {RSS_TARGET} MiB): {'ok' if ok else 'OVER'}"
        )
        if not ok:
            sys.exit(1)
    finally:
        if made:
            subprocess.run(
                [sys.executable, "-m", "pyd", "delete", "-f", "-n", args.name],
                env=env,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
