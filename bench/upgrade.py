"""`pyd upgrade` of a running instance: time to the engine answering again, against a plain
`pyd restart` of the same instance as the baseline, and a check that nothing was lost.

    flock /tmp/pyd-vm.lock python bench/upgrade.py [--runs 3]

One instance in a private PYD_HOME and PYD_CACHE_DIR (the built image hard-linked into it).
Before the runs: a volume with a known file, a busybox image built in the guest and a
container made from it. Each upgrade needs an image newer than the last: copies of the
built image under other keys (manifest with another recipe hash and a later date, files
hard-linked), so every run moves to the same bits and measures pyd's work, not a different
kernel. Upgrades and restarts alternate. Timed: the CLI end to end (it returns once
`docker version` answers through the agent), then one `docker version` from the host.
After every command: the volume's file, the image and the container are checked.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.e2e's helpers

from tests.e2e.pydcli import PydEnv
from tests.e2e.upgrade_data import data_lost, link_tree, make_data, newer_copy

from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.recipe import default_suite, recipe_dir

NAME = "upgbench"
TAG = "upgbench/busybox"
_PHASE = re.compile(r"✓ (.+?)\s+(\d+\.\d+) s")


def run(env: dict[str, str], *argv: str) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr}")
    return time.monotonic() - t0, r.stdout + r.stderr


def pyd(env: dict[str, str], *args: str) -> tuple[float, str]:
    return run(env, sys.executable, "-m", "pyd", *args, "-n", NAME)


def check_kept(env: PydEnv) -> None:
    if lost := data_lost(env, TAG):
        raise SystemExit("data lost: " + "; ".join(lost))


def med(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    image, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    with tempfile.TemporaryDirectory(prefix="pyd-bench-upgrade-") as tmp:
        work = Path(tmp)
        denv = PydEnv(work / "home", work / "docker")
        env = denv.env(PYD_CACHE_DIR=str(work / "cache"), DOCKER_BUILDKIT="0", COLUMNS="200")
        images = work / "cache" / "images"
        link_tree(image.path, images / image.key)
        try:
            first, _ = pyd(env, "start")
            print(f"first start: {first:.2f} s", flush=True)
            (work / "bb").mkdir()
            make_data(denv, work / "bb", TAG)
            upgrades: list[float] = []
            restarts: list[float] = []
            phases: dict[str, list[float]] = {}
            for i in range(args.runs):
                key = newer_copy(image.path, images, i + 1)
                took, out = pyd(env, "upgrade")
                t_docker, _ = run(env, "docker", "version", "--format", "{{.Server.Version}}")
                upgrades.append(took + t_docker)
                for name, s in _PHASE.findall(out):
                    phases.setdefault(name.strip(), []).append(float(s))
                if f"→ {key}" not in out:
                    raise SystemExit(f"the upgrade did not move to {key}:\n{out}")
                check_kept(denv)
                took, _ = pyd(env, "restart")
                t_docker, _ = run(env, "docker", "version", "--format", "{{.Server.Version}}")
                restarts.append(took + t_docker)
                check_kept(denv)
                print(
                    f"run {i + 1}: pyd upgrade {upgrades[-1]:.2f} s, pyd restart "
                    f"{restarts[-1]:.2f} s; volume file, image and container kept",
                    flush=True,
                )
            print(f"pyd upgrade → docker answers: {med(upgrades)}")
            print(f"pyd restart → docker answers: {med(restarts)}")
            ratio = statistics.median(upgrades) / statistics.median(restarts)
            print(f"ratio upgrade/restart (medians): {ratio:.2f}")
            for name, values in phases.items():
                print(f"  upgrade phase {name:<22} {med(values)}")
        finally:
            subprocess.run(
                [sys.executable, "-m", "pyd", "delete", "-f", "-n", NAME],
                env=env,
                capture_output=True,
                check=False,
            )


if __name__ == "__main__":
    main()
