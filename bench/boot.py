"""Boot to a Docker answer, 2 vCPU, 2 GiB: from QEMU start to `docker version` answering
over SSH. Prints medians and the timeline (kernel, init, sshd, dockerd).

    python bench/boot.py [--runs 5] [--arch x86_64|aarch64] [--dmesg] [--baseline]

--arch: the guest (default: this machine's); the other architecture's runs under TCG (the
arm64 guest on x86: `virt`, direct kernel boot, console ttyAMA0, the same marks). Run it
alone: a second VM on the host skews every figure (the bench warns if it sees one).
Two series: a first boot of a new instance (blank data disk formatted, AppArmor profile
compiled) and a restart of the same instance (the everyday case). --dmesg: the kernel's
own timestamps of the last restart (the console is quiet): its slowest steps before init.
--baseline also boots a stock Debian guest (systemd, udev, initramfs-tools, SeaBIOS +
bzImage; built once by bench/baseline/build-stock, host arch only) interleaved with pyd's
restarts, and prints the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from pyd.config.arches import get_arch, host_arch
from pyd.config.machine import machine_settings
from pyd.errors import UsageError
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
MARKS = ("init", "seed", "sysinit", "sshd-start", "dockerd-start", "network", "firewall", "binfmt")
# The boot to docker that the issue asks of each guest under this host's accelerator (TCG).
TARGET = {"x86_64": 15.0, "aarch64": 45.0}
DMESG_LINE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")


def one_boot(
    files: InstanceFiles, image: CachedImage, dmesg: list[str] | None = None
) -> dict[str, float]:
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
        if dmesg is not None:
            dmesg[:] = check(ssh, "dmesg").splitlines()
    return timeline


def kernel_steps(dmesg: list[str], init_at: float, top: int = 8) -> None:
    """The longest gaps between kernel log lines before init: what the line after each gap
    waited for (the quiet console shows none of it)."""
    stamped = [(float(m[1]), m[2]) for line in dmesg if (m := DMESG_LINE.match(line))]
    stamped = [(t, msg) for t, msg in stamped if t <= init_at]
    gaps = sorted(
        ((b[0] - a[0], b[0], b[1]) for a, b in itertools.pairwise(stamped)),
        reverse=True,
    )[:top]
    print(f"\nkernel log up to init ({init_at:.2f}s after kernel start): longest gaps")
    for gap, at, msg in gaps:
        print(f"  +{gap:5.2f}s  before [{at:7.2f}] {msg[:80]}")


def other_vms() -> list[str]:
    """Command names of QEMU system emulators already running on this host."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("qemu-system"):
            found.append(f"{comm} (pid {pid})")
    return found


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
    ap.add_argument("--arch", default=host_arch(), help="guest architecture (default: the host's)")
    ap.add_argument("--dmesg", action="store_true", help="kernel log gaps of the last restart")
    ap.add_argument("--baseline", action="store_true", help="also boot a stock Debian guest")
    args = ap.parse_args()
    try:
        arch = get_arch(args.arch)
    except UsageError as e:
        print(f"boot.py: {e}\nhint: {e.hint}", file=sys.stderr)
        sys.exit(2)
    if args.baseline and arch.name != host_arch():
        print(f"boot.py: --baseline boots the host's stock Debian ({host_arch()})", file=sys.stderr)
        sys.exit(2)
    if busy := other_vms():
        print(f"warning: other VMs are running, figures will be slow: {', '.join(busy)}")
    stock = stock_image() if args.baseline else None
    stock_times: list[float] = []
    image, _ = build_image(
        ImageCache(images_dir()), arch, default_suite(), recipe_dir(), progress=print
    )
    print(f"guest {arch.name}, image {image.key}", flush=True)
    first, again = [], []
    dmesg: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as tmp:
        for i in range(args.runs):
            files = prepare(Path(tmp) / f"vm{i}", image)
            first.append(one_boot(files, image))
            if stock:
                if i == 0:
                    stock_boot(stock, Path(tmp) / "stock")  # its first boot is not counted
                stock_times.append(stock_boot(stock, Path(tmp) / "stock"))
            again.append(one_boot(files, image, dmesg if args.dmesg else None))
            line = f"run {i + 1}: first boot {first[-1]['docker']:.2f}s, "
            line += f"restart {again[-1]['docker']:.2f}s"
            if stock_times:
                line += f", stock restart {stock_times[-1]:.2f}s"
            print(line, flush=True)
    report("first boot of a new instance", first)
    report("restart of an instance", again)
    if dmesg:
        kernel_steps(dmesg, again[-1]["init"] - again[-1]["kernel"])
    med = statistics.median(r["docker"] for r in again)
    fresh = statistics.median(r["docker"] for r in first)
    target = TARGET.get(arch.name, TARGET["x86_64"])
    print(
        f"\n{arch.name} to docker answer: restart median {med:.2f}s, first boot median "
        f"{fresh:.2f}s; target <= {target:.0f} s"
    )
    if stock_times:
        base = statistics.median(stock_times)
        print(
            f"stock Debian restart: median {base:.2f}s [{min(stock_times):.2f}-"
            f"{max(stock_times):.2f}]; pyd/stock ratio {med / base:.2f}"
        )


if __name__ == "__main__":
    main()
