"""File-change events: host edits seen by an inotify watcher in a container (issue 19).

With a real instance (the default; needs an agent that runs pyd.fileevents.FileEvents):
  latency  host edit -> event printed by `inotifyd` (busybox's output: tests/e2e/inotifyd.c)
           in a container bind-mounting the shared directory: median and p95 over --edits
           edits (targets 0.5 s and 1 s)
  burst    --burst files created at once on the host: an event (a rescan of their directory)
           must come after the last one; the agent's CPU during the burst
  idle     the agent's CPU while it watches a --tree file tree that does not change
           (target <= 0.5 % of one core)

--standalone runs the host side alone, in this process, with no VM: FileEvents watching the
same trees, its batches recorded instead of sent; the latency is host edit -> batch sent.

    python bench/file_events.py [--standalone] [--edits 100] [--burst 1000] [--tree 50000]
                                [--idle-seconds 30] [--only latency,burst,idle]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from busybox_image import build_busybox_image
from pyd.fileevents.service import FileEvents
from pyd.host.process_identity import read_identity
from pyd.host.threads import Deadline
from pyd.mounts.shares import Share

NAME = "bench-fileevents"
BASE = "pyd-bench-fileevents-busybox"
IMAGE = "pyd-bench-fileevents-inotifyd"
PARTS = ("latency", "burst", "idle")


def make_tree(root: Path, files: int, per_dir: int = 100) -> None:
    """`files` small files, `per_dir` to a directory: a project with its node_modules."""
    for i in range(files):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i % per_dir}.js").write_bytes(b"x")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report_latency(name: str, seconds: list[float]) -> None:
    med, p95 = statistics.median(seconds), pct(seconds, 0.95)
    print(f"{name}: median {med * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over {len(seconds)}")


class Lines:
    """Lines of a process's output, each with the time it arrived."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def since(self, t: float) -> list[tuple[float, str]]:
        with self._lock:
            return [x for x in self.lines if x[0] >= t]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_for(found: Callable[[], float | None], seconds: float) -> float | None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = found()
        if t is not None:
            return t
        time.sleep(0.005)
    return None


def cpu_percent(proc: psutil.Process, seconds: float) -> float:
    """The process's CPU (user + system, all threads) over `seconds`, in % of one core."""
    t0 = proc.cpu_times()
    w0 = time.monotonic()
    time.sleep(seconds)
    t1 = proc.cpu_times()
    used = (t1.user - t0.user) + (t1.system - t0.system)
    return 100 * used / (time.monotonic() - w0)


# --- with a real instance ------------------------------------------------------------------


class Instance:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = dict(os.environ)
        self.env.update(PYD_HOME=str(work / "home"), DOCKER_CONFIG=str(work / "docker"))
        self.env.pop("DOCKER_HOST", None)
        self.env.pop("DOCKER_CONTEXT", None)
        self.share = work / "share"
        self.share.mkdir()

    def run(self, *argv: str) -> str:
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} exited {r.returncode}:\n{r.stderr}")
        return r.stdout

    def pyd(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "pyd", *args)

    def start(self) -> None:
        self.pyd("start", "-n", NAME)
        self.pyd("mount", "add", str(self.share), "-n", NAME)
        build_busybox_image(self.env, self.work, BASE)
        # Debian's busybox-static has no inotifyd applet: a stand-in with its output.
        ctx = self.work / "inotifyd-ctx"
        ctx.mkdir()
        source = Path(__file__).resolve().parents[1] / "tests" / "e2e" / "inotifyd.c"
        self.run("cc", "-static", "-O2", "-o", str(ctx / "inotifyd"), str(source))
        (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY inotifyd /bin/inotifyd\n")
        self.run("docker", "build", "-q", "-t", IMAGE, str(ctx))

    def agent(self) -> psutil.Process:
        record = self.work / "home" / "instances" / NAME / "agent.pid"
        identity = read_identity(record)
        if identity is None:
            raise SystemExit(f"no agent record at {record}")
        return psutil.Process(identity.pid)

    def watcher(self, host_dir: Path, name: str) -> Lines:
        self.run("docker", "run", "-d", "--name", name, "-v", f"{host_dir}:/w", IMAGE,
                 "inotifyd", "-", "/w")  # fmt: skip
        lines = Lines(["docker", "logs", "-f", name], env=self.env)
        time.sleep(3)  # the agent sees the container and watches its bind
        return lines

    def stop(self) -> None:
        subprocess.run([sys.executable, "-m", "pyd", "delete", "-f", "-n", NAME],
                       env=self.env, capture_output=True, check=False)  # fmt: skip


def vm_latency(inst: Instance, edits: int) -> None:
    d = inst.share / "latency"
    d.mkdir()
    (d / "app.js").write_text("0")
    lines = inst.watcher(d, "fe-latency")
    try:
        seconds, missed = [], 0
        for i in range(edits):
            time.sleep(0.3)  # apart: each edit its own batch
            t0 = time.monotonic()
            (d / "app.js").write_text(str(i))
            seen = wait_for(lambda t0=t0: next((t for t, ln in lines.since(t0)
                                                 if ln.endswith("app.js")), None), 5)  # fmt: skip
            if seen is None:
                missed += 1
            else:
                seconds.append(seen - t0)
        report_latency("host edit -> inotifyd in a container", seconds)
        print(f"  missed (no event in 5 s): {missed}")
    finally:
        lines.close()


def vm_burst(inst: Instance, count: int) -> None:
    d = inst.share / "burst"
    d.mkdir()
    lines = inst.watcher(d, "fe-burst")
    agent = inst.agent()
    try:
        c0, t0 = agent.cpu_times(), time.monotonic()
        for i in range(count):
            (d / f"n{i}.js").write_bytes(b"x")
        last = time.monotonic()
        after = wait_for(lambda: next((t for t, _ in lines.since(last)), None), 10)
        time.sleep(2)
        c1, t1 = agent.cpu_times(), time.monotonic()
        used = (c1.user - c0.user) + (c1.system - c0.system)
        events = len(lines.since(t0))
        print(f"{count} files created at once: {events} events in the container")
        if after is None:
            print("  NO event after the last creation: watchers would miss files")
        else:
            print(f"  an event {1000 * (after - last):.0f} ms after the last creation")
        print(f"  agent CPU: {used:.2f} s over {t1 - t0:.1f} s ({100 * used / (t1 - t0):.1f} %)")
    finally:
        lines.close()


def vm_idle(inst: Instance, files: int, seconds: float) -> None:
    d = inst.share / "tree"
    make_tree(d, files)
    lines = inst.watcher(d, "fe-idle")
    try:
        time.sleep(10)  # the watches are set up
        agent = inst.agent()
        print(f"idle, {files} files watched: agent CPU {cpu_percent(agent, seconds):.2f} %")
    finally:
        lines.close()


# --- the host side alone --------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def send(self, script: str) -> bool:
        with self.lock:
            self.batches.append((time.monotonic(), script))
        return True

    def close(self) -> None:
        pass

    def since(self, t: float) -> list[tuple[float, str]]:
        with self.lock:
            return [b for b in self.batches if b[0] >= t]


def standalone(args: argparse.Namespace, work: Path) -> None:
    share = Share(str(work), "/mnt/share", True)
    rec = Recorder()
    fe = FileEvents(lambda wait: None, sys.platform, shell=rec)
    fe.start()
    fe.set_shares([share])
    binds: list[str] = []

    def bind(sub: str) -> None:
        binds.append(f"/mnt/share/{sub}")
        mounts = [{"Type": "bind", "Source": s} for s in binds]
        fe.set_containers([{"Names": ["/w"], "State": "running", "Mounts": mounts}])
        host = str(work / sub)
        wait_for(lambda: 0.0 if host in fe.watching() else None, 60)

    me = psutil.Process()
    try:
        if "latency" in args.only:
            d = work / "latency"
            d.mkdir()
            bind("latency")
            seconds = []
            for i in range(args.edits):
                time.sleep(0.3)
                t0 = time.monotonic()
                (d / "app.js").write_text(str(i))
                seen = wait_for(lambda t0=t0: next((t for t, s in rec.since(t0)
                                                     if "app.js" in s), None), 5)  # fmt: skip
                if seen is not None:
                    seconds.append(seen - t0)
            report_latency("host edit -> batch sent (host side alone)", seconds)
        if "burst" in args.only:
            d = work / "burst"
            d.mkdir()
            bind("burst")
            time.sleep(0.5)
            c0, t0 = me.cpu_times(), time.monotonic()
            for i in range(args.burst):
                (d / f"n{i}.js").write_bytes(b"x")
            last = time.monotonic()
            after = wait_for(lambda: next((t for t, s in rec.since(last)
                                           if "/mnt/share/burst" in s), None), 5)  # fmt: skip
            time.sleep(1)
            c1 = me.cpu_times()
            used = (c1.user - c0.user) + (c1.system - c0.system)
            print(f"{args.burst} files created at once: {len(rec.since(t0))} batches; the "
                  f"directory rescanned {'%.0f ms' % (1000 * (after - last)) if after else 'NEVER'}"
                  f" after the last; CPU {used:.2f} s (incl. creating them)")  # fmt: skip
        if "idle" in args.only:
            d = work / "tree"
            t0 = time.monotonic()
            make_tree(d, args.tree)
            bind("tree")
            print(f"{args.tree} files made and watched in {time.monotonic() - t0:.1f} s")
            time.sleep(5)
            print(f"idle: CPU of the watching process {cpu_percent(me, args.idle_seconds):.2f} %")
    finally:
        fe.close()
        fe.join(Deadline(5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--standalone", action="store_true")
    p.add_argument("--edits", type=int, default=100)
    p.add_argument("--burst", type=int, default=1000)
    p.add_argument("--tree", type=int, default=50_000)
    p.add_argument("--idle-seconds", type=float, default=30)
    p.add_argument("--only", default=",".join(PARTS))
    args = p.parse_args()
    args.only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="pyd-bench-fe-") as tmp:
        work = Path(tmp)
        if args.standalone:
            standalone(args, work)
            return
        inst = Instance(work)
        try:
            inst.start()
            if "latency" in args.only:
                vm_latency(inst, args.edits)
            if "burst" in args.only:
                vm_burst(inst, args.burst)
            if "idle" in args.only:
                vm_idle(inst, args.tree, args.idle_seconds)
        finally:
            inst.stop()


if __name__ == "__main__":
    main()
