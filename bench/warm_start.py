"""Warm start (issue 18): `pyd suspend`, then `pyd start` of the suspended instance until
`docker version` answers through the docker context, against a cold `pyd start` (the instance
stopped) to the same answer, interleaved in the same run, on a real instance (libvirt, TCG
here, a 2 GiB guest by default).

    python bench/warm_start.py [--rounds 5] [--memory 2GiB]

Per round: suspend (timed; the save file's size, apparent and on disk, against the guest's
RAM), warm start + `docker version`, stop, cold start + `docker version`. Prints medians
[min-max] of each, the phases `pyd start` printed for the warm start, and the ratio
warm/cold. Targets: warm start <= 2 s, suspend <= 3 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "bench-warm"
_PHASE = re.compile(r"✓ (.+?)\s+(\d+\.\d+) s")


def timed(env: dict[str, str], *argv: str) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
    return time.monotonic() - t0, r.stderr


def med(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", default="2GiB")
    args = ap.parse_args()
    pyd = [sys.executable, "-m", "pyd"]
    with tempfile.TemporaryDirectory(prefix="pyd-bench-warm-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {"PYD_HOME": str(work / "home"), "DOCKER_CONFIG": str(work / "docker")}
        save = work / "home" / "instances" / NAME / "suspend.save"
        try:
            first, _ = timed(env, *pyd, "start", "-n", NAME, "--memory", args.memory)
            print(f"first start ({args.memory} guest): {first:.2f} s", flush=True)
            rows: dict[str, list[float]] = {}
            phases: dict[str, list[float]] = {}

            def add(key: str, value: float) -> None:
                rows.setdefault(key, []).append(value)

            for i in range(args.rounds):
                # A busy guest's save is bigger: Docker has answered a few calls first.
                timed(env, "docker", "version")
                took, _ = timed(env, *pyd, "suspend", "-n", NAME)
                add("suspend", took)
                add("save MiB", save.stat().st_size / 2**20)
                add("save MiB on disk", save.stat().st_blocks * 512 / 2**20)
                t0 = time.monotonic()
                _, stderr = timed(env, *pyd, "start", "-n", NAME)
                timed(env, "docker", "version")
                add("warm start+docker", time.monotonic() - t0)
                for label, seconds in _PHASE.findall(stderr):
                    phases.setdefault(label, []).append(float(seconds))
                timed(env, *pyd, "stop", "-n", NAME)
                t0 = time.monotonic()
                timed(env, *pyd, "start", "-n", NAME)
                timed(env, "docker", "version")
                add("cold start+docker", time.monotonic() - t0)
                print(
                    f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()),
                    flush=True,
                )
            print(f"\nmedian [min-max] of {args.rounds} rounds ({args.memory} guest):")
            for key, values in rows.items():
                print(f"  {key:20s} {med(values)}")
            print("  warm start phases (as pyd start printed them):")
            for label, values in phases.items():
                print(f"    {label:18s} {med(values)}")
            warm = statistics.median(rows["warm start+docker"])
            cold = statistics.median(rows["cold start+docker"])
            print(
                f"  warm/cold: {warm / cold:.2f}; warm start target <= 2 s "
                f"({'met' if warm <= 2 else f'missed by {warm - 2:.2f} s'}); suspend target "
                f"<= 3 s ({statistics.median(rows['suspend']):.2f} s)"
            )
        finally:
            subprocess.run([*pyd, "delete", "-f", "-n", NAME], env=env, capture_output=True)


if __name__ == "__main__":
    main()
