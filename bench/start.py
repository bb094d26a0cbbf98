"""`pyd start` under this machine's accelerator (TCG here): total time, phases, and pyd's own
overhead; then the host agent at rest and `docker version` through its socket.

    python bench/start.py [--runs 5] [--docker-runs 15] [--idle 60]

For each run the instance is stopped, then started cold and timed end to end (the CLI
process, to a Docker answer on the host socket). pyd's overhead = total minus the guest's
own boot-to-engine time in the same run (QEMU process start, read from /proc, to the agent
seeing the engine answer). A direct-QEMU boot of the same image (bench/boot.py's restart
case: QEMU start to `docker version` over SSH) runs interleaved as the baseline.

Then: the agent's CPU share and RSS over --idle seconds with nothing to do, and `docker
version` through the agent's socket against an OpenSSH `ssh -L` forward to the same VM,
interleaved (target: median ratio <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boot import one_boot
from docker_socket import SSHForward, run_docker
from forwarders import ssh_config
from guest_idle import settle
from pyd.config.arches import get_arch
from pyd.host.paths import images_dir
from pyd.image.build import build_image
from pyd.image.cache import ImageCache
from pyd.image.recipe import default_suite, recipe_dir
from pyd.vm.throwaway import prepare

NAME = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_PHASE = re.compile(r"✓ (.+?)\s+(\d+\.\d+) s")


def pyd(env: dict[str, str], *args: str) -> tuple[float, str]:
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "pyd", *args], env=env, capture_output=True, text=True, timeout=900
    )
    if r.returncode != 0:
        raise SystemExit(f"pyd {' '.join(args)} failed:\n{r.stderr}")
    return time.time() - t0, r.stderr


def qemu_pid() -> int:
    return int(Path(f"/run/libvirt/qemu/pyd-{NAME}.pid").read_text().strip())


def started_at(pid: int) -> float:
    """Wall-clock start of a process, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    btime = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return btime + int(fields[19]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def med(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--docker-runs", type=int, default=15)
    ap.add_argument("--idle", type=float, default=60)
    args = ap.parse_args()
    image, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    with tempfile.TemporaryDirectory(prefix="pyd-bench-start-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {"PYD_HOME": str(work / "home"), "DOCKER_CONFIG": str(work / "docker")}
        baseline_files = prepare(work / "direct", image)
        try:
            first, _ = pyd(env, "start", "-n", NAME)
            print(f"first start (new instance: disks made, data disk formatted): {first:.2f} s")
            runs: list[dict[str, float]] = []
            direct: list[float] = []
            for i in range(args.runs):
                pyd(env, "stop", "-n", NAME)
                total, stderr = pyd(env, "start", "-n", NAME)
                agent = json.loads((work / "home/instances" / NAME / "agent.json").read_text())
                guest = agent["updated"] - started_at(qemu_pid())
                run = {"total": total, "guest": guest, "overhead": total - guest}
                run |= {name: float(s) for name, s in _PHASE.findall(stderr)}
                runs.append(run)
                pyd(env, "stop", "-n", NAME)
                direct.append(one_boot(baseline_files, image)["docker"])
                print(
                    f"run {i + 1}: pyd start {total:.2f} s (guest {guest:.2f}, overhead "
                    f"{total - guest:.2f}); direct QEMU boot {direct[-1]:.2f} s",
                    flush=True,
                )
            print(f"\n`pyd start` of a stopped instance ({args.runs} runs), s: median [min-max]")
            for key in [k for k in runs[0] if all(k in r for r in runs)]:
                print(f"  {key:16s} {med([r[key] for r in runs])}")
            print(f"  {'direct boot':16s} {med(direct)}  (baseline: QEMU start to docker answer)")
            total_med = statistics.median(r["total"] for r in runs)
            print(
                f"  pyd start - direct boot: {total_med - statistics.median(direct):.2f} s; "
                f"overhead target <= 2 s"
            )

            pyd(env, "start", "-n", NAME)
            agent_file = work / "home/instances" / NAME / "agent.json"
            agent_pid = json.loads(agent_file.read_text())["pid"]
            time.sleep(5)
            c0, t0 = cpu_seconds(agent_pid), time.monotonic()
            time.sleep(args.idle)
            share = (cpu_seconds(agent_pid) - c0) / (time.monotonic() - t0) * 100
            print(
                f"\nhost agent idle over {args.idle:.0f} s: CPU {share:.2f} % (target <= 0.5), "
                f"RSS {rss_mib(agent_pid):.1f} MiB (target <= 60)"
            )

            files = work / "home/instances" / NAME
            port = json.loads((files / "state.json").read_text())["ssh_port"]
            host_key = (files / "ssh/host_ed25519.pub").read_text()
            config = ssh_config(work, port, files / "ssh/id_ed25519", host_key)
            ssh_l = SSHForward(work, port, config)
            sock = files / "sock/docker.sock"
            ways = {"pyd": {"DOCKER_HOST": f"unix://{sock}"}, "ssh-L": ssh_l.env}
            times: dict[str, list[float]] = {k: [] for k in ways}
            docker_config = work / "docker-bench"
            docker_config.mkdir()
            qemu = qemu_pid()
            try:
                for w in ways.values():
                    run_docker(w, docker_config, ["version"])
                for i in range(args.docker_runs):
                    for name in list(ways)[:: 1 if i % 2 else -1]:
                        settle(qemu)
                        times[name].append(run_docker(ways[name], docker_config, ["version"]))
            finally:
                ssh_l.finish()
            print(f"\n`docker version` ({args.docker_runs} runs), ms: median [min-max]")
            for name, vals in times.items():
                ms = [v * 1000 for v in vals]
                print(f"  {name:6s} {statistics.median(ms):7.1f} [{min(ms):.1f}-{max(ms):.1f}]")
            ratio = statistics.median(times["pyd"]) / statistics.median(times["ssh-L"])
            print(f"  pyd (agent socket) / ssh -L: {ratio:.2f} (target <= 1.2)")
        finally:
            subprocess.run(
                [sys.executable, "-m", "pyd", "delete", "-f", "-n", NAME], env=env, check=False
            )


if __name__ == "__main__":
    main()
