"""The host docker CLI against a guest's Docker engine, three ways, interleaved per round:

  pyd      pyd's UnixSocketForward in its own process holding one paramiko connection
           (as the host agent does)
  ssh-L    OpenSSH `ssh -N -L SOCK:/var/run/docker.sock` (what Lima/Colima do)
  ssh://   DOCKER_HOST=ssh://root@127.0.0.1:PORT (docker runs `ssh … docker system
           dial-stdio` per connection)

    python bench/docker_socket.py [--runs 15] [--command version]

Boots a throwaway instance under software emulation here, like bench/boot.py. Prints medians,
min-max and the ratios pyd/ssh-L (target <= 1.2) and pyd/ssh:// (target <= 0.2), then the
forwarder process's RSS and CPU time.

`python bench/docker_socket.py serve SOCK PORT KEY HOSTKEY` is the forwarder process itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from forwarders import OpenSSHForward, PydForwarder, report_until_stdin_closes, ssh_config
from guest_idle import settle

GUEST_SOCKET = "/var/run/docker.sock"


# -- the forwarder process ---------------------------------------------------------------


def serve(sock: Path, port: int, key: Path, host_key: str) -> None:
    """Runs pyd's forward until stdin closes, then prints its own resource use as JSON."""
    from pyd.relay.unix_socket import UnixSocketForward
    from pyd.ssh.connect import SSHTarget, connect
    from pyd.ssh.streamlocal import open_streamlocal

    client = connect(SSHTarget("127.0.0.1", port, "root", key, host_key))
    transport = client.get_transport()
    with UnixSocketForward(sock, lambda: open_streamlocal(transport, GUEST_SOCKET)):
        report_until_stdin_closes(
            {"cipher": transport.remote_cipher},
            lambda: {"rss_kib": _current_rss_kib(), "threads": threading.active_count()},
        )
    client.close()


def _current_rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- the three endpoints -------------------------------------------------------------------


class PydForward(PydForwarder):
    name = "pyd"

    def __init__(self, work: Path, port: int, key: Path, host_key: str) -> None:
        self.sock = work / "pyd" / "docker.sock"
        super().__init__(__file__, [str(self.sock), str(port), str(key), host_key])
        self.cipher = self.hello["cipher"]
        self.env = {"DOCKER_HOST": f"unix://{self.sock}"}


class SSHForward(OpenSSHForward):
    name = "ssh-L"

    def __init__(self, work: Path, port: int, config: Path) -> None:
        self.sock = work / "ssh-L" / "docker.sock"
        self.sock.parent.mkdir(mode=0o700)
        super().__init__(config, port, f"{self.sock}:{GUEST_SOCKET}", self.sock.exists)
        self.env = {"DOCKER_HOST": f"unix://{self.sock}"}


class SSHScheme:
    name = "ssh://"

    def __init__(self, work: Path, port: int, config: Path) -> None:
        # docker runs plain `ssh`: a wrapper first on PATH gives it our key and known_hosts.
        bindir = work / "bin"
        bindir.mkdir()
        wrapper = bindir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {config} "$@"\n')
        wrapper.chmod(0o755)
        self.env = {
            "DOCKER_HOST": f"ssh://root@127.0.0.1:{port}",
            "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        }


def ping(sock: Path) -> float:
    """One new connection and `GET /_ping`: the forward's own cost, without the CLI's."""
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(str(sock))
        s.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        reply = b""
        while data := s.recv(65536):
            reply += data
    elapsed = time.perf_counter() - t0
    if not reply.endswith(b"\r\n\r\nOK"):
        raise SystemExit(f"unexpected /_ping answer via {sock}: {reply!r}")
    return elapsed


def report(title: str, times: dict[str, list[float]]) -> dict[str, float]:
    print(f"\n{title}, ms: median [min-max]")
    med = {}
    for name, vals in times.items():
        med[name] = statistics.median(vals)
        print(
            f"  {name:7s} {med[name] * 1000:7.1f}  [{min(vals) * 1000:.1f}-{max(vals) * 1000:.1f}]"
        )
    return med


def run_docker(env: dict[str, str], config_dir: Path, args: list[str]) -> float:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    full |= env | {"DOCKER_CONFIG": str(config_dir)}
    t0 = time.perf_counter()
    r = subprocess.run(["docker", *args], env=full, capture_output=True, timeout=300)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed via {env}: {r.stderr.decode()}")
    return elapsed


# -- the bench -------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _, _, sock, port, key, host_key = sys.argv
        serve(Path(sock), int(port), Path(key), host_key)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--command", default="version", help="docker arguments, space-separated")
    args = ap.parse_args()
    command = args.command.split()

    from pyd.config.arches import get_arch
    from pyd.host.paths import images_dir
    from pyd.image.build import build_image
    from pyd.image.cache import ImageCache
    from pyd.image.recipe import default_suite, recipe_dir
    from pyd.vm.throwaway import booted, prepare, wait_for_docker

    image, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as tmp:
        work = Path(tmp)
        files = prepare(work / "vm", image)
        with booted(files, image) as (vm, client):
            print(f"docker {wait_for_docker(client)} answers in the guest", flush=True)
            target = vm.ssh_target()
            config = ssh_config(work, target.port, target.key_file, target.host_public_key)
            pyd = PydForward(work, target.port, target.key_file, target.host_public_key)
            ssh_l = SSHForward(work, target.port, config)
            scheme = SSHScheme(work, target.port, config)
            ways: list[PydForward | SSHForward | SSHScheme] = [pyd, ssh_l, scheme]
            times: dict[str, list[float]] = {w.name: [] for w in ways}
            docker_config = work / "docker-config"
            docker_config.mkdir()
            qemu = vm.process.pid
            try:
                for w in ways:  # warm-up: first connections, page cache; not counted
                    run_docker(w.env, docker_config, command)
                for i in range(args.runs):
                    order = ways[i % 3 :] + ways[: i % 3]  # nobody always goes first
                    for w in order:
                        settle(qemu)
                        times[w.name].append(run_docker(w.env, docker_config, command))
                    line = ", ".join(f"{w.name} {times[w.name][-1] * 1000:.0f}" for w in ways)
                    print(f"round {i + 1}: {line} ms", flush=True)
                pings: dict[str, list[float]] = {"pyd": [], "ssh-L": []}
                for i in range(args.runs):
                    for w in (pyd, ssh_l) if i % 2 else (ssh_l, pyd):
                        settle(qemu)
                        pings[w.name].append(ping(w.sock))
            finally:
                usage = pyd.finish()
                ssh_l.finish()
        med = report(f"`docker {' '.join(command)}` ({args.runs} runs)", times)
        print(f"\npyd/ssh-L   {med['pyd'] / med['ssh-L']:.2f}  (target <= 1.2)")
        print(f"pyd/ssh://  {med['pyd'] / med['ssh://']:.3f}  (target <= 0.2)")
        pmed = report(f"new connection + GET /_ping, no CLI ({args.runs} runs)", pings)
        print(f"\npyd/ssh-L   {pmed['pyd'] / pmed['ssh-L']:.2f}")
        print(
            f"\nforwarder process after {args.runs + 1} `docker` runs and {args.runs} pings: "
            f"RSS {usage['rss_kib'] / 1024:.1f} MiB (peak {usage['max_rss_kib'] / 1024:.1f}), "
            f"CPU {usage['cpu_s']:.2f} s, of which {usage['cpu_at_ready_s']:.2f} s before the "
            f"first connection (imports, SSH handshake); {usage['threads']:.0f} threads; "
            f"paramiko cipher {pyd.cipher}"
        )


if __name__ == "__main__":
    main()
