"""`pyd stop` under this machine's accelerator (TCG here): total time, its host agent and guest
shutdown phases, and where the agent's part goes; optionally against an older checkout.

    python bench/stop.py [--runs 5] [--base DIR]

Each round starts the instance (not timed), waits for the guest to settle, then times `pyd
stop` end to end (the CLI process) and reads the phases it prints ("host agent", "guest
shutdown"). The agent's own view comes from agent.log: the stop request's arrival to its parts
closed, and to the keeper done.

--base DIR: a checkout of the code before a change (`git worktree add /tmp/base COMMIT`, or
`git archive COMMIT | tar -x -C /tmp/base`); its rounds run interleaved with this checkout's,
same instance settings, its own PYD_HOME and guest image (its recipe's): the instance, named
NAME-base, is started and stopped by that code alone, its agent too.
Targets (issue 18): `pyd stop` <= 4 s in all, its agent part <= 0.5 s.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.recipe import default_suite, recipe_dir

NAME = "bench-stop"
HERE = Path(__file__).resolve().parent.parent  # this checkout
_PHASE = re.compile(r"✓ (.+?)\s+(\d+\.\d+) s")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ (\S+): (.*)$")
SETTLE = 5.0  # after start: the agent's standby and the guest's boot tail are done


def pyd(env: dict[str, str], *args: str) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "pyd", *args], env=env, capture_output=True, text=True, timeout=900
    )
    if r.returncode != 0:
        raise SystemExit(f"pyd {' '.join(args)} failed:\n{r.stderr}")
    return time.monotonic() - t0, r.stderr


def log_times(log: Path, since: float) -> dict[str, float]:
    """Wall-clock times (time.time()) of the stop's lines in agent.log written after `since`:
    the agent's "stopping on request" and "closed in", the keeper's "stopped on request"."""
    found: dict[str, float] = {}
    wanted = {"stopping on request": "asked", "closed in": "closed", "stopped on request": "keeper"}
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if not m:
            continue
        at = datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if at < since:
            continue
        for text, key in wanted.items():
            if m[3].startswith(text):
                found[key] = at
    return found


def one_round(env: dict[str, str], name: str) -> dict[str, float]:
    pyd(env, "start", "-n", name)
    time.sleep(SETTLE)
    began = time.time()
    total, stderr = pyd(env, "stop", "-n", name)
    run = {"total": total}
    run |= {name: float(s) for name, s in _PHASE.findall(stderr)}
    seen = log_times(Path(env["PYD_HOME"]) / "instances" / name / "agent.log", began - 1)
    if "asked" in seen and "closed" in seen:
        run["agent: asked to closed"] = seen["closed"] - seen["asked"]
    if "asked" in seen and "keeper" in seen:
        run["agent: asked to keeper done"] = seen["keeper"] - seen["asked"]
    return run


def env_for(work: Path, code: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env |= {
        "PYD_HOME": str(work / "home"),
        "DOCKER_CONFIG": str(work / "docker"),
        "PYTHONPATH": os.pathsep.join([str(code / "desktop"), str(code)]),
    }
    return env


def med(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} [{min(values):.2f}-{max(values):.2f}]"


def report(title: str, runs: list[dict[str, float]]) -> None:
    print(f"\n{title} ({len(runs)} runs), s: median [min-max]")
    for key in [k for k in runs[0] if all(k in r for r in runs)]:
        print(f"  {key:28s} {med([r[key] for r in runs])}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base", type=Path, help="a checkout of the code to compare against")
    args = ap.parse_args()
    build_image(ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print)
    with tempfile.TemporaryDirectory(prefix="pyd-bench-stop-") as tmp:
        # label: (environment, instance name); names differ, as libvirt's domains are global.
        ways = {"this checkout": (env_for(Path(tmp) / "this", HERE), NAME)}
        if args.base is not None:
            ways["base"] = (env_for(Path(tmp) / "base", args.base.resolve()), f"{NAME}-base")
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in ways}
        try:
            for label, (env, name) in ways.items():
                first, _ = pyd(env, "start", "-n", name)  # disks made, data disk formatted
                print(f"{label}: first start {first:.2f} s")
                pyd(env, "stop", "-n", name)
            for i in range(args.runs):
                for label in list(ways) if i % 2 == 0 else list(ways)[::-1]:
                    run = one_round(*ways[label])
                    runs[label].append(run)
                    phases = ", ".join(f"{k} {v:.2f}" for k, v in run.items() if k != "total")
                    print(f"run {i + 1} {label}: pyd stop {run['total']:.2f} s ({phases})",
                          flush=True)  # fmt: skip
        finally:
            for env, name in ways.values():
                subprocess.run(
                    [sys.executable, "-m", "pyd", "delete", "-f", "-n", name], env=env, check=False
                )
        for label, done in runs.items():
            if done:
                report(f"`pyd stop` of a running instance, {label}", done)
        print("  targets (issue 18): total <= 4 s, host agent <= 0.5 s")


if __name__ == "__main__":
    main()
