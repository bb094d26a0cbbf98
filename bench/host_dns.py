"""DNS in a container through the host's resolver (issue 19) against QEMU's DNS, on a real
`pyd start` instance (libvirt, TCG here).

One container stays up; each lookup is busybox nslookup (A and AAAA, as a libc asks) run in
it, timed inside it: a shell loop reads the clock (adjtimex, microseconds) around each
nslookup, the kinds below taken in turn, one of each per round. The same names are asked
of the new path (the container's resolv.conf: the guest relay, then the agent and this
host's getaddrinfo) and of QEMU's DNS (10.0.2.3, which asks this host's configured servers):

- cached: one name this host's servers answer, asked again and again;
- uncached: a fresh name each time (under a real domain: the servers must ask upstream);
- hosts file: a name only in this host's /etc/hosts (new path only: QEMU's DNS cannot).

Also the relay's cost in the guest: its resident memory and its CPU over --idle seconds
with no queries. Medians (and p95) in milliseconds; the loop's own cost (the clock reads,
no lookup) is printed as `baseline`.

    python bench/host_dns.py [--rounds 30] [--name pypi.org] [--idle 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from busybox_image import build_busybox_image

NAME = "bench-hostdns"
IMAGE = "pyd-bench-hostdns-busybox"
QEMU_DNS = "10.0.2.3"
HOSTS = Path("/etc/hosts")
# adjtimex prints the clock's seconds and its micro- (or, in nanosecond mode, nano)seconds.
CLOCK = (
    "adjtimex | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} "
    'END{if (u>999999) u=int(u/1000); printf "%.0f\\n", s*1000000+u}\''
)


def run(env: dict[str, str], *argv: str, timeout: float = 900) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def timed(env: dict[str, str], container: str, asks: list[tuple[str, str]]) -> list[float]:
    """Milliseconds of each `nslookup NAME [SERVER]` of `asks`, in turn, in the container
    (SERVER "": its own resolv.conf; "-": no lookup at all, the loop's baseline)."""
    lookups = "\n".join(
        f"a=$({CLOCK}); "
        + (": ; " if server == "-" else f"nslookup {n} {server} >/dev/null 2>&1; ")
        + f"b=$({CLOCK}); echo $((b - a))"
        for n, server in asks
    )
    out = run(env, "docker", "exec", container, "sh", "-c", lookups)
    return [int(line) / 1000 for line in out.split()]


def interleaved(
    env: dict[str, str], container: str, kinds: list[list[tuple[str, str]]]
) -> list[list[float]]:
    """Each kind's asks taken in turn, one of each kind per round: a machine whose load
    drifts (other VMs) weighs on every kind alike."""
    rounds = list(zip(*kinds, strict=True))
    flat = timed(env, container, [ask for one in rounds for ask in one])
    return [flat[i :: len(kinds)] for i in range(len(kinds))]


def summary(label: str, ms: list[float]) -> str:
    p95 = sorted(ms)[max(0, int(len(ms) * 0.95) - 1)]
    return f"{label:34s} median {statistics.median(ms):7.1f} ms  p95 {p95:7.1f} ms  (n={len(ms)})"


def relay_cost(env: dict[str, str], idle: float) -> str:
    """The relay's RSS and its CPU ticks over `idle` seconds without queries."""
    script = (
        "p=$(pgrep -f /usr/lib/pyd/dns-relay | head -1); "
        "t() { awk '{print $14+$15}' /proc/$p/stat; }; "
        f"a=$(t); sleep {idle}; b=$(t); "
        "echo rss_kib=$(awk '/VmRSS/{print $2}' /proc/$p/status) "
        "ticks=$((b - a)) hz=$(getconf CLK_TCK)"
    )
    return run(env, sys.executable, "-m", "pyd", "ssh", "-n", NAME, "--", script).strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--name", default="pypi.org", help="a name this host's servers answer")
    ap.add_argument("--idle", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyd-bench-hostdns-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        env |= {"PYD_HOME": str(work / "home"), "DOCKER_CONFIG": str(work / "docker")}
        env.pop("DOCKER_HOST", None)
        env.pop("DOCKER_CONTEXT", None)
        before = HOSTS.read_bytes()
        only_here = f"pyd-bench-{uuid.uuid4().hex[:8]}.test"
        try:
            HOSTS.write_bytes(before + f"\n192.0.2.77\t{only_here}\n".encode())
            pyd = [sys.executable, "-m", "pyd"]
            run(env, *pyd, "start", "-n", NAME, "--memory", "1GiB", "--disk", "4GiB")
            build_busybox_image(env, work, IMAGE)
            container = run(env, "docker", "run", "-d", IMAGE, "sleep", "3600").strip()
            n = args.rounds
            fresh = [f"pyd-{uuid.uuid4().hex[:10]}.{args.name}" for _ in range(2 * n)]
            timed(env, container, [(args.name, ""), (args.name, QEMU_DNS)] * 3)  # warm up
            kinds = [
                [("x", "-")] * n,
                [(args.name, "")] * n,
                [(args.name, QEMU_DNS)] * n,
                [(name, "") for name in fresh[:n]],
                [(name, QEMU_DNS) for name in fresh[n:]],
                [(only_here, "")] * n,
            ]
            labels = [
                "baseline (clock reads only)",
                f"cached {args.name}: host resolver",
                f"cached {args.name}: QEMU's DNS",
                "uncached: host resolver",
                "uncached: QEMU's DNS",
                "hosts-file name: host resolver",
            ]
            found = interleaved(env, container, kinds)
            rows = [summary(label, ms) for label, ms in zip(labels, found, strict=True)]
            print("\n".join(rows))
            print("relay in the guest:", relay_cost(env, args.idle))
        finally:
            HOSTS.write_bytes(before)
            subprocess.run([*pyd, "delete", "-f", "-n", NAME], env=env, capture_output=True)


if __name__ == "__main__":
    main()
