"""Shares in the guest, pyd against Lima's method, same VM, same run (TCG here):

  pyd   the share as the agent mounts it: sshfs -o slave on an OpenSSH session of its own,
        piped to the SFTP server process pyd chose (--server, default as pyd's own default:
        openssh is the host's sftp-server confined to the share, the default on Linux;
        builtin is pyd's own `python -m pyd.mounts.sftp_serve`; pyd.mounts.sftp_host);
        --agent-ssh: on an exec channel of the agent's paramiko connection instead
  lima  Lima's reverse-sshfs: the host's OpenSSH `sftp-server` piped to `ssh … sshfs :DIR
        MOUNTPOINT -o slave -o allow_other` (OpenSSH client, default algorithms), here with
        plain OS pipes between the two processes

Measured inside the guest, after dropping its page cache, on files neither side has read:
  read   sequential read of a 100 MB file (MB/s)
  walk   walk and read 2,000 small files of 1-4 KiB in 20 directories (ms per file)
  write  100 MB copied by a container into the share in 1 MiB writes (MB/s); the host's
         sha256 must match what the container wrote

    python bench/mounts.py [--runs 5] [--mb 100] [--files 2000] [--server builtin|openssh]
                           [--only read,walk,write] [--lima-algorithms pyd] [--agent-ssh]

--lima-algorithms pyd gives the baseline's ssh pyd's cipher and MAC, to tell the cost of the
algorithms from the cost of the host side's path.

Prints medians, min-max and the ratios pyd/lima (targets: read >= 1.0, walk >= 1.0; for
walk the ratio is lima's ms per file over pyd's, so higher is better for both).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from busybox_image import build_busybox_image
from pyd.agent.status_file import read_status
from pyd.instance.files import InstanceFiles
from pyd.instance.state import load_state
from pyd.mounts.openssh_link import ENV as SHARE_SSH_ENV
from pyd.mounts.sftp_host import BUILTIN, OPENSSH, default_server, system_server
from pyd.mounts.sftp_host import ENV as SERVER_ENV
from pyd.mounts.state import MountState
from pyd.ssh.connect import PREFERRED_CIPHERS, PREFERRED_MACS
from pyd.ssh.openssh import ssh_argv

NAME = "bench-mounts"
IMAGE = "pyd-bench-mounts-busybox"
LIMA_MP = "/mnt/lima-share"
WAYS = ("pyd", "lima")
UNITS = {"read": "MB/s", "walk": "ms/file", "write": "MB/s"}


def run(env: dict[str, str], *argv: str, input: bytes | None = None) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, input=input, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr.decode(errors='replace')}")
    return r.stdout.decode()


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.lima_algorithms = args.lima_algorithms
        self.work = work
        self.share = work / "share"
        self.share.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        self.env |= {
            "PYD_HOME": str(work / "home"),
            "DOCKER_CONFIG": str(work / "docker"),
            "DOCKER_BUILDKIT": "0",
        }
        if args.server:
            self.env[SERVER_ENV] = args.server
        if args.agent_ssh:
            self.env[SHARE_SSH_ENV] = "agent"
        self.pyd = [sys.executable, "-m", "pyd"]
        self.lima: list[subprocess.Popen[bytes]] = []
        self.files = InstanceFiles(work / "home" / "instances" / NAME)

    def guest(self, script: str) -> str:
        return run(self.env, *self.pyd, "ssh", "-n", NAME, "--", script)

    def start(self) -> None:
        t0 = time.monotonic()
        run(self.env, *self.pyd, "start", "-n", NAME)
        print(f"pyd start (the home directory shared): {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        run(self.env, *self.pyd, "mount", "add", str(self.share), "-n", NAME)
        # The agent's status file, not `pyd mount ls` in a loop: a Python process every
        # 0.1 s would take the emulated guest's CPU and slow what is measured.
        while True:
            status = read_status(self.files.agent_status)
            rows = status.mounts if status else ()
            if any(r.location == str(self.share) and r.state == MountState.MOUNTED for r in rows):
                break
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"the share did not mount: {rows}")
            time.sleep(0.05)
        print(f"`pyd mount add` to mounted: {time.monotonic() - t0:.2f} s")
        build_busybox_image(self.env, self.work, IMAGE)
        self.guest("true")  # writes the pinned known_hosts file that ssh_argv uses

    def mount_lima(self) -> None:
        """Lima's reverse-sshfs for the same directory, at LIMA_MP."""
        server = system_server(sys.platform)
        if server is None:
            raise SystemExit("no OpenSSH sftp-server on this host: Lima's method needs one")
        files = self.files
        state = load_state(files.state)
        assert state is not None
        ssh = shutil.which("ssh")
        assert ssh is not None
        command = f"mkdir -p {LIMA_MP} && sshfs :{self.share} {LIMA_MP} -o slave -o allow_other"
        argv = ssh_argv(ssh, state.ssh_port, files.client_key, files.known_hosts, [command], False)
        if self.lima_algorithms == "pyd":
            argv[1:1] = ["-c", PREFERRED_CIPHERS[0], "-m", PREFERRED_MACS[0]]
        sftp = subprocess.Popen([server], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        client = subprocess.Popen(argv, stdin=sftp.stdout, stdout=sftp.stdin)
        self.lima = [client, sftp]
        self.guest(
            f"i=0; until grep -q ' {LIMA_MP} .* fuse.sshfs ' /proc/self/mountinfo; do "
            "i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.1; done"
        )

    def stop(self) -> None:
        for p in self.lima:
            p.terminate()
        subprocess.run([*self.pyd, "delete", "-f", "-n", NAME], env=self.env, capture_output=True)

    def mount_point(self, way: str) -> str:
        return str(self.share) if way == "pyd" else LIMA_MP

    # -- the measurements ----------------------------------------------------------------

    def timed(self, script: str) -> float:
        """Seconds the guest spends in `script`, after dropping its page cache."""
        out = self.guest(
            "sync; echo 3 > /proc/sys/vm/drop_caches; "
            f"s=$(date +%s%N); {script}; e=$(date +%s%N); echo $((e - s))"
        )
        return int(out.split()[-1]) / 1e9

    def measure(self, kind: str, way: str, r: int, args: argparse.Namespace) -> float:
        if kind == "read":
            return self.read(way, f"big-{way}-{r}", args.mb)
        if kind == "walk":
            return self.walk(way, f"tree-{way}-{r}", args.files)
        return self.write(way, f"out-{way}-{r}", args.mb)

    def read(self, way: str, name: str, mb: int) -> float:
        seconds = self.timed(f"cat '{self.mount_point(way)}/{name}' > /dev/null")
        return mb * 1e6 / seconds / 1e6

    def walk(self, way: str, tree: str, files: int) -> float:
        seconds = self.timed(f"find '{self.mount_point(way)}/{tree}' -type f -exec cat {{}} + "
                             "> /dev/null")  # fmt: skip
        return seconds * 1000 / files

    def write(self, way: str, name: str, mb: int) -> float:
        mp = self.mount_point(way)
        # The data is made first (in the container's own filesystem), then copied in 1 MiB
        # writes: the share's speed, not /dev/urandom's or a 4 KiB writer's. busybox's date
        # has no %N: the kernel's uptime (1/100 s) times the copy instead.
        out = run(self.env, "docker", "run", "--rm", "-v", f"{mp}:/data", IMAGE, "sh", "-c",
                  f"mkdir -p /tmp && head -c {mb * 1000000} /dev/urandom > /tmp/blob && "
                  "sha256sum /tmp/blob && "
                  "cut -d' ' -f1 /proc/uptime && "
                  f"dd if=/tmp/blob of=/data/{name} bs=1M 2>/dev/null && sync && "
                  "cut -d' ' -f1 /proc/uptime")  # fmt: skip
        words = out.split()
        digest, start, end = words[0], float(words[2]), float(words[-1])
        host = hashlib.sha256((self.share / name).read_bytes()).hexdigest()
        if host != digest:
            raise SystemExit(f"{way}: the host's copy of {name} differs from what was written")
        return mb / (end - start)


def make_tree(root: Path, files: int, rng: random.Random) -> None:
    for i in range(files):
        d = root / f"d{i % 20:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(rng.randbytes(rng.randint(1024, 4096)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--server", choices=(BUILTIN, OPENSSH), help="PYD_SFTP_SERVER for pyd")
    ap.add_argument("--only", default="read,walk,write", help="which measures, comma-separated")
    ap.add_argument("--agent-ssh", action="store_true", help="shares on the agent's connection")
    ap.add_argument("--lima-algorithms", choices=("default", "pyd"), default="default")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rng = random.Random(7)
    results: dict[str, dict[str, list[float]]] = {
        k: {w: [] for w in WAYS} for k in ("read", "walk", "write") if k in only
    }
    with tempfile.TemporaryDirectory(prefix="pyd-bench-mounts-") as tmp:
        bench = Bench(Path(tmp), args)
        try:
            for r in range(args.runs):
                for way in WAYS:
                    if "read" in only:
                        big = rng.randbytes(args.mb * 10**6)
                        (bench.share / f"big-{way}-{r}").write_bytes(big)
                    if "walk" in only:
                        make_tree(bench.share / f"tree-{way}-{r}", args.files, rng)
            bench.start()
            bench.mount_lima()
            for r in range(args.runs):
                order = WAYS if r % 2 == 0 else WAYS[::-1]
                for way in order:
                    for kind, by_way in results.items():
                        by_way[way].append(bench.measure(kind, way, r, args))
                print(f"round {r + 1}: " + "; ".join(
                    f"{w} " + ", ".join(f"{k} {v[w][-1]:.1f} {UNITS[k]}"
                                        for k, v in results.items())
                    for w in WAYS), flush=True)  # fmt: skip
        finally:
            bench.stop()
    report(results, args)


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    chosen = args.server or default_server(sys.platform)
    server = "confined OpenSSH sftp-server" if chosen == OPENSSH else "built-in SFTP server"
    over = "the agent's connection" if args.agent_ssh else "OpenSSH sessions"
    print(f"\n{args.runs} runs, pyd with the {server} over {over}: median [min-max]")
    for kind, by_way in results.items():
        for way, values in by_way.items():
            print(f"  {kind:5} {way:5} {statistics.median(values):7.2f} "
                  f"[{min(values):.2f}-{max(values):.2f}] {UNITS[kind]}")  # fmt: skip
    med = {k: {w: statistics.median(v) for w, v in d.items()} for k, d in results.items()}
    print()
    for kind, m in med.items():
        # Higher is better for every ratio: for the walk, lima's time over pyd's.
        ratio = m["lima"] / m["pyd"] if kind == "walk" else m["pyd"] / m["lima"]
        what = "lima/pyd" if kind == "walk" else "pyd/lima"
        goal = "(sha256 matched)" if kind == "write" else "(target >= 1.0)"
        print(f"{kind:5} {what} {ratio:.2f}  {goal}")


if __name__ == "__main__":
    main()
