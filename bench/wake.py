"""After a wake (issue 18): how soon a published port and a share answer again, on a real
`pyd start` instance (libvirt, TCG here), for the two wakes a laptop sees:

- pause: the VM paused PAUSE seconds with libvirt and resumed (a host sleep, as the guest
  sees one: the host's TCP connections into QEMU stay open);
- resume: `pyd suspend`, then `pyd start` (a new QEMU: every connection into the guest is new).

Two containers started once, before the first wake, and never restarted: `port` serves a
file of its own through a published port; `share` serves, through another published port,
a directory of the host's home share bind-mounted into it. After each wake a file is written
on the host into that directory at once, and both ports are asked every 20 ms until they
answer (the share's with that new file's contents: the host's files are seen through the
container's own bind). Seconds from the wake (the resume; for `resume`, the start of
`pyd start`, and also from when the restored VM runs again, as libvirt reports it), medians
over the rounds; "never" past --timeout. Target: both <= 2 s after the wake.

    python bench/wake.py [--rounds 5] [--pause 60] [--kinds pause,resume] [--timeout 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

import libvirt

from busybox_image import build_busybox_image

NAME = "bench-wake"
IMAGE = "pyd-bench-wake-busybox"
POLL = 0.02


def run(env: dict[str, str], *argv: str) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, want: bytes | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            body: bytes = r.read()
    except OSError:
        return False
    return want is None or body == want


def until_each(
    checks: list[Callable[[], bool]], since: float, timeout: float
) -> list[float | None]:
    """Seconds from `since` (time.monotonic()) until each check first holds, all asked in
    turn every POLL; None for one that never held within `timeout`."""
    found: list[float | None] = [None] * len(checks)
    while time.monotonic() - since < timeout and None in found:
        for i, check in enumerate(checks):
            if found[i] is None and check():
                found[i] = time.monotonic() - since
        time.sleep(POLL)
    return found


def runs(conn: libvirt.virConnect, domain: str) -> bool:
    """The restored VM runs (libvirt has loaded its memory and resumed its CPUs)."""
    try:
        state = conn.lookupByName(domain).state()[0]
    except libvirt.libvirtError:
        return False
    return bool(state == libvirt.VIR_DOMAIN_RUNNING)


def shown(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    never = len(values) - len(got)
    if not got:
        return "never"
    text = f"{statistics.median(got):6.2f} [{min(got):.2f}-{max(got):.2f}]"
    return text + (f", {never} of {len(values)} never" if never else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pause", type=float, default=60.0)
    ap.add_argument("--kinds", default="pause,resume")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    pyd = [sys.executable, "-m", "pyd"]
    # Inside the home directory: the default share.
    shared = Path(tempfile.mkdtemp(prefix=".pyd-bench-wake-", dir=Path.home()))
    with tempfile.TemporaryDirectory(prefix="pyd-bench-wake-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env |= {"PYD_HOME": str(work / "home"), "DOCKER_CONFIG": str(work / "docker")}
        conn = libvirt.open("qemu:///system")
        try:
            run(env, *pyd, "start", "-n", NAME)
            build_busybox_image(env, work, IMAGE)
            port_p, share_p = free_port(), free_port()
            serve = "mkdir -p /own && echo own > /own/id && exec httpd -f -p 80 -h {}"
            run(env, "docker", "run", "-d", "--name", "port", "-p", f"{port_p}:80", IMAGE,
                "sh", "-c", serve.format("/own"))  # fmt: skip
            run(env, "docker", "run", "-d", "--name", "share", "-p", f"{share_p}:80",
                "-v", f"{shared}:/www", IMAGE, "sh", "-c", serve.format("/www"))  # fmt: skip
            port_url = f"http://127.0.0.1:{port_p}/id"
            (shared / "before").write_text("before\n")
            first = [port_url, f"http://127.0.0.1:{share_p}/before"]
            if None in until_each([partial(answers, u, None) for u in first], time.monotonic(), 60):
                raise SystemExit(f"{first} do not both answer before any wake")
            rows: dict[str, list[float | None]] = {}
            dom = conn.lookupByName(f"pyd-{NAME}")
            for i in range(args.rounds):
                for kind in kinds:
                    time.sleep(2)
                    token = f"{kind}-{i}"
                    if kind == "pause":
                        dom.suspend()
                        time.sleep(args.pause)
                        dom.resume()
                        woke = time.monotonic()
                        start = None
                    else:
                        run(env, *pyd, "suspend", "-n", NAME)
                        woke = time.monotonic()
                        start = subprocess.Popen(
                            [*pyd, "start", "-n", NAME], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        )  # fmt: skip
                    (shared / token).write_text(token + "\n")
                    share_url = f"http://127.0.0.1:{share_p}/{token}"
                    want = (token + "\n").encode()
                    checks: list[Callable[[], bool]] = [
                        partial(answers, port_url, b"own\n"),
                        partial(answers, share_url, want),
                    ]
                    if start is not None:  # when the restored VM runs again: the resume
                        checks.append(partial(runs, conn, f"pyd-{NAME}"))
                    port_s, share_s, *ran = until_each(checks, woke, args.timeout)
                    if start is not None and start.wait(timeout=600) != 0:
                        raise SystemExit("pyd start after the suspend failed")
                    rows.setdefault(f"{kind}: port", []).append(port_s)
                    rows.setdefault(f"{kind}: share", []).append(share_s)
                    said = f"round {i + 1} {kind}: port {port_s}, share {share_s}"
                    if ran and ran[0] is not None:
                        for key, value in (("port", port_s), ("share", share_s)):
                            later = None if value is None else value - ran[0]
                            rows.setdefault(f"{kind}: {key} after VM runs", []).append(later)
                        said += f", VM running {ran[0]:.2f}"
                    print(said, flush=True)
            print(f"\nseconds from the wake until it answers, median [min-max] of {args.rounds}:")
            for key, values in rows.items():
                print(f"  {key:16s} {shown(values)}")
            print(
                "  target: <= 2 s after the wake (pause: the resume; resume: the restored VM"
                " runs, and from pyd start begun)"
            )
        finally:
            conn.close()
            subprocess.run([*pyd, "delete", "-f", "-n", NAME], env=env, capture_output=True)
            shutil.rmtree(shared, ignore_errors=True)


if __name__ == "__main__":
    main()
