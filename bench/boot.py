"""Boot to a Docker answer under this machine's accelerator (TCG here), 2 vCPU, 2 GiB:
from QEMU start to `docker version` answering over SSH. Prints medians and the timeline.

    python bench/boot.py [--runs 5]

Two series: a first boot of a new instance (blank data disk formatted, AppArmor profile
compiled) and a restart of the same instance (the everyday case).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pyd.arches import get_arch
from pyd.guestrun import booted, check, elapsed, prepare, wait_for_docker
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.recipe import default_suite, recipe_dir
from pyd.instance_files import InstanceFiles
from pyd.paths import images_dir

# Guest marks (seconds since the kernel started) shown in the timeline, in boot order.
MARKS = ("init", "seed", "sysinit", "sshd-start", "dockerd-start", "network", "firewall")


def one_boot(files: InstanceFiles, image: CachedImage) -> dict[str, float]:
    with booted(files, image) as (vm, ssh):
        t_ssh = elapsed(vm)
        wait_for_docker(ssh)
        t_docker = elapsed(vm)
        uptime = float(check(ssh, "cut -d' ' -f1 /proc/uptime"))
        offset = elapsed(vm) - uptime  # QEMU start -> kernel start
        timeline = {"kernel": offset, "ssh": t_ssh, "docker": t_docker}
        for line in check(ssh, "cat /run/pyd/timeline").splitlines():
            name, at = line.split()
            if name in MARKS:
                timeline[name] = offset + float(at)
    return timeline


def report(title: str, runs: list[dict[str, float]]) -> None:
    keys = ["kernel", *MARKS, "ssh", "docker"]
    print(f"\n{title} ({len(runs)} runs), seconds from QEMU start, median [min-max]")
    for k in sorted(
        (k for k in keys if all(k in r for r in runs)),
        key=lambda k: statistics.median(r[k] for r in runs),
    ):
        vals = [r[k] for r in runs]
        print(f"  {k:14s} {statistics.median(vals):6.2f}  [{min(vals):.2f}-{max(vals):.2f}]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    image, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    first, again = [], []
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as tmp:
        for i in range(args.runs):
            files = prepare(Path(tmp) / f"vm{i}", image)
            first.append(one_boot(files, image))
            again.append(one_boot(files, image))
            print(
                f"run {i + 1}: first boot {first[-1]['docker']:.2f}s, "
                f"restart {again[-1]['docker']:.2f}s",
                flush=True,
            )
    report("first boot of a new instance", first)
    report("restart of an instance", again)
    target = 15.0
    med = statistics.median(r["docker"] for r in again)
    print(
        f"\nrestart to docker answer: median {med:.2f}s, target <= {target:.0f}s, "
        f"ratio to the 38 s stock systemd boot: {med / 38.0:.2f}"
    )


if __name__ == "__main__":
    main()
