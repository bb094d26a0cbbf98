"""A 100 MB HTTP download from the guest through a forwarded host port, four ways,
interleaved per round:

  pyd       pyd's TcpPortForward in its own process holding one paramiko connection
            (as the host agent does)
  ssh-L     OpenSSH `ssh -N -L PORT:127.0.0.1:GUESTPORT` (what Lima/Colima do), with its
            default algorithms
  ssh-L-ctr the same with the algorithms pyd prefers (aes128-ctr, hmac-sha2-512-etm): how
            much of the difference is the algorithms, how much the client
  hostfwd   QEMU's own user-mode port forward straight to the guest port, no SSH: the
            ceiling, since under emulation the guest side is what runs out first

    python bench/port_forward.py [--runs 5] [--mb 100] [--profile FILE]

Boots a throwaway instance under software emulation here, like bench/docker_socket.py, with
one extra QEMU hostfwd for the server port (built here from qemu_argv; pyd itself forwards
only SSH). The guest serves a file of random bytes with `busybox httpd`; every download is
checked against its sha256. Prints MB/s medians, min-max, the ratio pyd/ssh-L (target >= 1.0)
and the CPU each way costs the host per run: the forwarder's own, and QEMU's.

`python bench/port_forward.py serve HOSTPORT SSHPORT KEY HOSTKEY GUESTPORT [PROFILE]` is the
forwarder process itself.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forwarders import OpenSSHForward, PydForwarder, report_until_stdin_closes, ssh_config
from guest_idle import cpu_seconds, settle

GUEST_PORT = 8080
GUEST_DIR = "/tmp/pyd-bench-www"
# What pyd.ssh.connect prefers, for an OpenSSH run that differs from pyd's only in the client.
SAME_ALGORITHMS = ("-c", "aes128-ctr", "-m", "hmac-sha2-512-etm@openssh.com")


# -- the forwarder process ---------------------------------------------------------------


def serve(host_port: int, ssh_port: int, key: Path, host_key: str, profile: str | None) -> None:
    """Runs pyd's forward until stdin closes, then prints its own resource use as JSON."""
    profiler = _ThreadProfiler() if profile else None
    from pyd.ports.forwards import Forward
    from pyd.ports.listener import TcpPortForward
    from pyd.ssh.connect import SSHTarget, connect
    from pyd.ssh.direct_tcpip import open_direct_tcpip

    client = connect(SSHTarget("127.0.0.1", ssh_port, "root", key, host_key))
    transport = client.get_transport()
    assert transport is not None
    forward = Forward("127.0.0.1", host_port, GUEST_PORT, "tcp", "manual")

    def open_channel(f: Forward, origin: tuple[str, int]) -> Any:
        return open_direct_tcpip(transport, (f.guest_ip, f.guest_port), origin)

    with TcpPortForward(forward, open_channel):
        report_until_stdin_closes({"cipher": transport.remote_cipher, "mac": transport.remote_mac})
    client.close()
    if profiler is not None and profile is not None:
        profiler.dump(profile)


class _ThreadProfiler:
    """cProfile in every thread started from now on (paramiko's transport thread, which
    overrides Thread.run, and the relays), merged into one file at the end."""

    def __init__(self) -> None:
        import cProfile

        self.profiles: list[cProfile.Profile] = []
        profiles = self.profiles

        def first_call(*_: object) -> None:
            # Runs once in each new thread; the profiler then replaces this hook there.
            p = cProfile.Profile(time.thread_time)  # CPU, not time spent waiting
            profiles.append(p)
            p.enable()

        threading.setprofile(first_call)

    def dump(self, path: str) -> None:
        import pstats

        stats = pstats.Stats(self.profiles[0])
        for p in self.profiles[1:]:
            stats.add(p)
        stats.dump_stats(path)


# -- the guest ---------------------------------------------------------------------------


@contextlib.contextmanager
def booted_with_hostfwd(files: Any, image: Any) -> Iterator[tuple[Any, Any, int]]:
    """throwaway.booted(), plus a QEMU hostfwd from a free loopback port to GUEST_PORT."""
    from pyd.config.arches import get_arch
    from pyd.config.machine import machine_settings
    from pyd.host.loopback import free_loopback_port
    from pyd.vm.accel import detect_accel
    from pyd.vm.backends.qemu_cmdline import qemu_argv
    from pyd.vm.backends.qemu_process import require_qemu
    from pyd.vm.spec import guest_spec
    from pyd.vm.throwaway import BOOT_TIMEOUT
    from pyd.vm.throwaway_qemu import DirectVM

    spec = guest_spec(
        get_arch(image.manifest.arch),
        machine_settings(detect_accel()),
        image,
        files,
        cpus=2,
        memory_mib=2048,
        ssh_port=free_loopback_port(),
    )
    hostfwd_port = free_loopback_port()
    argv = qemu_argv(spec)
    i = argv.index("-netdev") + 1
    assert argv[i].startswith("user,"), argv[i]
    argv[i] += f",hostfwd=tcp:127.0.0.1:{hostfwd_port}-:{GUEST_PORT}"
    proc = subprocess.Popen(
        require_qemu(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    vm = DirectVM(spec, files, proc, time.monotonic())
    client = None
    try:
        client = vm.connect(BOOT_TIMEOUT)
        yield vm, client, hostfwd_port
    finally:
        if client is not None:
            vm.poweroff(client, timeout=60)
        vm.kill()


def start_server(client: Any, mb: int) -> str:
    """A file of `mb` MB of random bytes served by busybox httpd on GUEST_PORT; its sha256."""
    from pyd.vm.throwaway import check

    out = check(
        client,
        f"mkdir -p {GUEST_DIR} && head -c {mb}M /dev/urandom > {GUEST_DIR}/blob && "
        f"sha256sum {GUEST_DIR}/blob && "
        f"busybox httpd -p 0.0.0.0:{GUEST_PORT} -h {GUEST_DIR}",
        timeout=600,
    )
    return out.split()[0]


# -- the three ways ------------------------------------------------------------------------


class PydForward(PydForwarder):
    name = "pyd"

    def __init__(
        self, port: int, ssh_port: int, key: Path, host_key: str, profile: str | None
    ) -> None:
        from pyd.host.loopback import free_loopback_port

        self.port = free_loopback_port()
        args = [str(self.port), str(ssh_port), str(key), host_key, str(port)]
        super().__init__(__file__, args + ([profile] if profile else []))
        self.cipher = f"{self.hello['cipher']} {self.hello['mac']}"


class SSHForward(OpenSSHForward):
    """`ssh -N -L`: with OpenSSH's default algorithms (chacha20-poly1305 against this guest),
    or with `options` such as the algorithms pyd's connection negotiates."""

    def __init__(self, ssh_port: int, config: Path, name: str, options: tuple[str, ...]) -> None:
        from pyd.host.loopback import free_loopback_port

        self.name = name
        self.port = free_loopback_port()
        spec = f"127.0.0.1:{self.port}:127.0.0.1:{GUEST_PORT}"
        super().__init__(config, ssh_port, spec, lambda: _answers(self.port), options)


class HostFwd:
    name = "hostfwd"

    def __init__(self, port: int) -> None:
        self.port = port
        self.pid: int | None = None  # QEMU itself, counted separately


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- measuring -----------------------------------------------------------------------------


def cpu_used(pid: int | None) -> float:
    """CPU seconds of process `pid` so far; 0 for none (hostfwd has no process of its own)."""
    if pid is None:
        return 0.0
    return cpu_seconds(pid) or 0.0


def download(port: int, expected_sha256: str, size: int) -> float:
    """Seconds for `GET /blob` through `port`, from connect to the last byte; checks the
    body's length and sha256."""
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"GET /blob HTTP/1.0\r\nHost: bench\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            n = s.recv_into(buf)
            if n == 0:
                raise SystemExit(f"no HTTP answer on port {port}: {head!r}")
            head += bytes(view[:n])
        head, _, body = head.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
            raise SystemExit(f"unexpected answer on port {port}: {head[:200]!r}")
        digest.update(body)
        got = len(body)
        while n := s.recv_into(buf):
            digest.update(view[:n])
            got += n
    elapsed = time.perf_counter() - t0
    if got != size or digest.hexdigest() != expected_sha256:
        raise SystemExit(f"corrupt download via port {port}: {got} bytes, {digest.hexdigest()}")
    return elapsed


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        host_port, ssh_port, key, host_key, _guest_port = sys.argv[2:7]
        profile = sys.argv[7] if len(sys.argv) > 7 else None
        serve(int(host_port), int(ssh_port), Path(key), host_key, profile)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100, help="download size, MiB")
    ap.add_argument("--profile", help="write the forwarder's cProfile stats here")
    args = ap.parse_args()

    from pyd.config.arches import get_arch
    from pyd.host.paths import images_dir
    from pyd.image.build import build_image
    from pyd.image.cache import ImageCache
    from pyd.image.recipe import default_suite, recipe_dir
    from pyd.vm.throwaway import prepare

    image, _ = build_image(
        ImageCache(images_dir()), get_arch(), default_suite(), recipe_dir(), progress=print
    )
    size = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="pyd-bench-") as tmp:
        work = Path(tmp)
        files = prepare(work / "vm", image)
        with booted_with_hostfwd(files, image) as (vm, client, hostfwd_port):
            sha = start_server(client, args.mb)
            print(f"guest serves {args.mb} MiB on port {GUEST_PORT}, sha256 {sha[:16]}…")
            target = vm.ssh_target()
            config = ssh_config(work, target.port, target.key_file, target.host_public_key)
            qemu = vm.process.pid
            pyd = PydForward(
                GUEST_PORT, target.port, target.key_file, target.host_public_key, args.profile
            )
            ssh_l = SSHForward(target.port, config, "ssh-L", ())
            ssh_same = SSHForward(target.port, config, "ssh-L-ctr", SAME_ALGORITHMS)
            ways: list[PydForward | SSHForward | HostFwd] = [
                pyd,
                ssh_l,
                ssh_same,
                HostFwd(hostfwd_port),
            ]
            speed: dict[str, list[float]] = {w.name: [] for w in ways}
            own_cpu: dict[str, list[float]] = {w.name: [] for w in ways}
            qemu_cpu: dict[str, list[float]] = {w.name: [] for w in ways}
            try:
                for w in ways:  # warm-up: page cache, first connections; not counted
                    download(w.port, sha, size)
                for i in range(args.runs):
                    k = i % len(ways)
                    for w in ways[k:] + ways[:k]:  # nobody always goes first
                        settle(qemu)
                        c0, q0 = cpu_used(w.pid), cpu_used(qemu)
                        secs = download(w.port, sha, size)
                        own_cpu[w.name].append(cpu_used(w.pid) - c0)
                        qemu_cpu[w.name].append(cpu_used(qemu) - q0)
                        speed[w.name].append(size / 1e6 / secs)
                    line = ", ".join(f"{w.name} {speed[w.name][-1]:.1f}" for w in ways)
                    print(f"round {i + 1}: {line} MB/s", flush=True)
            finally:
                usage = pyd.finish(timeout=60)
                ssh_l.finish()
                ssh_same.finish()
    print(
        f"\n{args.mb} MiB download, {args.runs} runs: MB/s median [min-max]; "
        "CPU seconds per download (median) of QEMU and of the forwarder process"
    )
    med = {}
    for name, vals in speed.items():
        med[name] = statistics.median(vals)
        forwarder = f"{statistics.median(own_cpu[name]):5.2f}" if name != "hostfwd" else "    -"
        print(
            f"  {name:9s} {med[name]:6.1f}  [{min(vals):5.1f}-{max(vals):5.1f}]   "
            f"QEMU {statistics.median(qemu_cpu[name]):5.2f}   forwarder {forwarder}"
        )
    print(f"\npyd/ssh-L      {med['pyd'] / med['ssh-L']:.2f}  (target >= 1.0)")
    print(f"pyd/ssh-L-ctr  {med['pyd'] / med['ssh-L-ctr']:.2f}  (OpenSSH with pyd's algorithms)")
    print(f"pyd/hostfwd    {med['pyd'] / med['hostfwd']:.2f}  (hostfwd: no SSH, the ceiling)")
    print(
        f"\nforwarder process: CPU {usage['cpu_s']:.1f} s in all, {usage['cpu_at_ready_s']:.2f} s"
        f" before the first connection; peak RSS {usage['max_rss_kib'] / 1024:.1f} MiB; "
        f"paramiko negotiated {pyd.cipher}; ssh-L negotiates OpenSSH's default "
        "(chacha20-poly1305@openssh.com with this guest)"
    )


if __name__ == "__main__":
    main()
