"""Boot to a Docker answer under this machine's accelerator (TCG here), 2 vCPU, 2 GiB:
from QEMU start to `docker version` answering over SSH. Prints medians and the timeline.

    python bench/boot.py [--runs 5] [--baseline]

Two series: a first boot of a new instance (blank data disk formatted, AppArmor profile
compiled) and a restart of the same instance (the everyday case). --baseline also boots a
stock Debian guest (systemd, udev, initramfs-tools, SeaBIOS + bzImage; built once by
bench/baseline/build-stock) interleaved with pyd's restarts, and prints the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import tempfile
from pathlib import Path

from pyd.config.arches import get_arch
from pyd.config.machine import machine_settings
from pyd.host.loopback import free_loopback_port
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import CachedImage, ImageCache
from pyd.image.recipe import default_suite, recipe_dir
from pyd.instance.disks import create_overlay
from pyd.instance.files import InstanceFiles
from pyd.ssh.connect import SSHTarget, wait_for_ssh
from pyd.ssh.keys import generate_keypair, write_keypair
from pyd.vm.accel import detect_accel
from pyd.vm.spec import Disk, GuestSpec
from pyd.vm.throwaway import booted, check, elapsed, prepare, wait_for_docker
from pyd.vm.throwaway_qemu import DirectVM

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


STOCK = Path("/var/tmp/pyd-bench-stock")


def stock_image() -> Path:
    """The baseline guest, built once (~60 s) with keys baked in."""
    img = STOCK / "img"
    if not (img / "root.qcow2").exists():
        STOCK.mkdir(parents=True, exist_ok=True)
        write_keypair(STOCK / "client", generate_keypair("bench"))
        write_keypair(STOCK / "host", generate_keypair("stock"))
        (STOCK / "authorized_keys").write_text((STOCK / "client.pub").read_text())
        subprocess.run(
            [
                str(Path(__file__).parent / "baseline" / "build-stock"),
                str(img),
                str(STOCK / "authorized_keys"),
                str(STOCK / "host"),
            ],
            check=True,
        )
    return img


def stock_boot(img: Path, work: Path) -> float:
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "root.qcow2"
    if not disk.exists():
        create_overlay(img / "root.qcow2", disk)
    machine = machine_settings(detect_accel())
    arch = dataclasses.replace(get_arch(), firmware="")  # SeaBIOS, as stock tools boot
    spec = GuestSpec(
        arch=arch,
        accel=machine.accel,
        accel_cpu=machine.cpu,
        cpus=2,
        memory_mib=2048,
        kernel=img / "vmlinuz",
        initrd=img / "initrd.img",
        disks=(Disk(disk, "stock-root"),),
        ssh_port=free_loopback_port(),
        serial_log=work / "serial.log",
        cmdline_extra=("root=LABEL=stock-root", "quiet"),
    )
    vm = DirectVM.launch(spec, InstanceFiles(work))
    target = SSHTarget(
        "127.0.0.1", spec.ssh_port, "root", STOCK / "client", (STOCK / "host.pub").read_text()
    )
    client = None
    try:
        client = wait_for_ssh(target, vm.started + 300)
        wait_for_docker(client)
        return elapsed(vm)
    finally:
        vm.poweroff(client, timeout=60) if client else vm.kill()
        vm.kill()


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
    ap.add_argument("--baseline", action="store_true", help="also boot a stock Debian guest")
    args = ap.parse_args()
    stock = stock_image() if args.baseline else None
    stock_times: list[float] = []
    image, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    first, again = [], []
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as tmp:
        for i in range(args.runs):
            files = prepare(Path(tmp) / f"vm{i}", image)
            first.append(one_boot(files, image))
            if stock:
                if i == 0:
                    stock_boot(stock, Path(tmp) / "stock")  # its first boot is not counted
                stock_times.append(stock_boot(stock, Path(tmp) / "stock"))
            again.append(one_boot(files, image))
            line = f"run {i + 1}: first boot {first[-1]['docker']:.2f}s, "
            line += f"restart {again[-1]['docker']:.2f}s"
            if stock_times:
                line += f", stock restart {stock_times[-1]:.2f}s"
            print(line, flush=True)
    report("first boot of a new instance", first)
    report("restart of an instance", again)
    med = statistics.median(r["docker"] for r in again)
    print(f"\nrestart to docker answer: median {med:.2f}s, target <= 15 s")
    if stock_times:
        base = statistics.median(stock_times)
        print(
            f"stock Debian restart: median {base:.2f}s [{min(stock_times):.2f}-"
            f"{max(stock_times):.2f}]; pyd/stock ratio {med / base:.2f}"
        )


if __name__ == "__main__":
    main()
