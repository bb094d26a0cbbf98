"""Request/response through a published UDP port, against TCP through the same path, on a
real `pyd start` instance (TCG here). Run it alone: the round trips are CPU-bound in QEMU.

A container runs tests/e2e/udpecho.c (UDP and TCP echo on one port) published twice:
`-p U:5000/udp -p T:5000/tcp`. Each way makes `--requests` sequential round trips of a
64-byte payload from one host client; a UDP reply not back within 2 s counts as lost (target:
0 lost of 1,000). Then the guest's udp-relay is measured in place: its RSS and its CPU over
10 s of quiet.

    python bench/udp_ports.py [--requests 1000]
    python bench/udp_ports.py helpers    # the relay's language: perl against python3 and C

`helpers` measures, on this host, what each choice of guest helper would cost: RSS of a
process of the relay's shape sleeping in select() (perl: udp-relay itself after one flow;
python3: the same imports and loop; C: tests/e2e/udpecho.c built static, the same shape),
its CPU over 5 s of quiet, and perl's round trips per second through a local echo.

Figures (2026-12-04, this 2-core host, TCG guest, trixie image; run alone):
  round trips (UDP then TCP, interleaved): UDP median 2.08 ms, p95 8.97 ms, max 29.8 ms;
    TCP median 1.64 ms, p95 2.73 ms; UDP / TCP 1.27; 0 lost of 1,000. The difference is
    the relay's extra hop in the guest (sshd -> udp-relay -> docker-proxy instead of sshd ->
    docker-proxy). Another run, started at once after the first reply: UDP 2.57 / TCP 1.89 ms
    (1.36), p95 24 / 20 ms, 0 lost. A first version, not interleaved, measured UDP 7.9 ms
    against TCP 1.8 ms: the guest was still busy after its boot while UDP ran.
  `docker run -d -p U:C/udp` returning to the first UDP reply (binding, relay start): 0.54 s.
  With bursts batched (91cbd8c): UDP 2.20 / TCP 1.70 ms median (1.29), p95 3.04 / 2.48 ms,
    0 lost; first reply 0.35 s; relay 6.5 MiB RSS, 0 CPU at idle.
  udp-relay in the guest: 6.6 MiB RSS, 0 CPU ticks in 10 s of quiet.
  helpers (on this host): perl udp-relay 6.9 MiB RSS, 0 ticks idle, ~20,700 round trips/s
    through a local echo, 0 image bytes (perl-base is Essential); python3 with the same
    imports and loop 13.7 MiB RSS, 0 ticks idle, ~12 MiB of image (python3.X-minimal and
    libpython3.X-minimal: 6.6 + 5.1 MiB installed, Debian's 3.11 packages), not otherwise in
    the image; static C (glibc) 0.7 MiB RSS, 0 ticks idle, 754 KiB of image. Perl: nothing
    added to the image, and its RSS is paid only while a UDP port is in use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from busybox_image import bench_env, build_busybox_image
from pyd.host.loopback import free_tcp_and_udp_port

NAME = "bench-udp"
BASE = "pyd-bench-udp-busybox"
IMAGE = "pyd-bench-udpecho"
ECHO_PORT = 5000
PAYLOAD = 64
LOST_AFTER = 2.0  # seconds: a UDP reply later than this counts as lost
ROUNDS = 10
REPO = Path(__file__).resolve().parents[1]
ECHO_SOURCE = REPO / "tests" / "e2e" / "udpecho.c"
RELAY = REPO / "guest-image" / "overlay" / "usr" / "lib" / "pyd" / "udp-relay"


def run(env: dict[str, str], *argv: str) -> str:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{r.stderr}")
    return r.stdout


def build_static_echo(out: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler for tests/e2e/udpecho.c (apt-get install gcc libc6-dev)")
    subprocess.run([cc, "-static", "-O2", "-o", str(out), str(ECHO_SOURCE)], check=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class UdpClient:
    """Sequential round trips through the published UDP port; a reply later than LOST_AFTER
    counts as lost (a late one is skipped when it comes)."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.lost = 0
        self._n = 0

    def warm(self) -> None:
        """Until one comes back: the first datagrams start the relay (asked every 0.1 s)."""
        self.sock.settimeout(0.1)
        end = time.monotonic() + 120
        while True:
            self.sock.sendto(b"warm", self.address)
            try:
                if self.sock.recvfrom(100)[0] == b"warm":
                    return
            except (TimeoutError, ConnectionRefusedError):  # refused: not bound on the host yet
                if time.monotonic() > end:
                    raise SystemExit("the published UDP port never answered") from None

    def round_trips(self, n: int) -> list[float]:
        self.sock.settimeout(LOST_AFTER)
        times: list[float] = []
        for _ in range(n):
            self._n += 1
            data = self._n.to_bytes(4, "big") + os.urandom(PAYLOAD - 4)
            t0 = time.perf_counter()
            self.sock.sendto(data, self.address)
            try:
                while self.sock.recvfrom(100)[0] != data:
                    pass
                times.append(time.perf_counter() - t0)
            except TimeoutError:
                self.lost += 1
        return times


class TcpClient:
    """Sequential round trips on one connection through the published TCP port."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def round_trips(self, n: int) -> list[float]:
        times: list[float] = []
        for _ in range(n):
            data = os.urandom(PAYLOAD)
            t0 = time.perf_counter()
            self.sock.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = self.sock.recv(len(data) - len(got))
                if not chunk:
                    raise SystemExit("the TCP echo closed the connection")
                got += chunk
            times.append(time.perf_counter() - t0)
            assert got == data
        return times


def guest_relay(env: dict[str, str], pyd: list[str]) -> str:
    """The udp-relay's RSS and its CPU over 10 s of quiet, measured in the guest."""
    script = (
        "p=$(pgrep -f '^/usr/bin/perl /usr/lib/pyd/udp-relay' | head -1); "
        '[ -n "$p" ] || { echo none; exit; }; '
        "rss=$(awk '/VmRSS/ {print $2}' /proc/$p/status); "
        "a=$(awk '{print $14+$15}' /proc/$p/stat); sleep 10; "
        "b=$(awk '{print $14+$15}' /proc/$p/stat); "
        'echo "$rss $((b - a))"'
    )
    out = run(env, *pyd, "ssh", "-n", NAME, "--", script).split()
    if out == ["none"]:
        return "no udp-relay found in the guest"
    rss_kib, ticks = int(out[0]), int(out[1])
    return f"udp-relay in the guest: {rss_kib / 1024:.1f} MiB RSS, {ticks} CPU ticks in 10 s quiet"


def request_response(requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pyd-bench-udp-") as tmp:
        work = Path(tmp)
        env = bench_env(work)
        pyd = [sys.executable, "-m", "pyd"]
        try:
            run(env, *pyd, "start", "-n", NAME)
            build_static_echo(work / "udpecho")
            build_busybox_image(env, work, IMAGE, {"udpecho": work / "udpecho"})
            udp, tcp = free_tcp_and_udp_port(), free_tcp_and_udp_port()
            run(env, "docker", "run", "-d", "--name", "echo",
                "-p", f"{udp}:{ECHO_PORT}/udp", "-p", f"{tcp}:{ECHO_PORT}/tcp",
                IMAGE, "udpecho", str(ECHO_PORT))  # fmt: skip
            t0 = time.monotonic()
            udp_client = UdpClient(udp)
            udp_client.warm()  # the agent sees the container, binds, starts the relay
            first = time.monotonic() - t0
            print(f"`docker run -d -p U:C/udp` returned to the first UDP reply: {first:.2f} s")
            tcp_client = TcpClient(tcp)
            tcp_client.round_trips(10)
            # Interleaved in ROUNDS, so that neither way gets the guest's quieter moments.
            udp_times: list[float] = []
            tcp_times: list[float] = []
            for _ in range(ROUNDS):
                udp_times += udp_client.round_trips(requests // ROUNDS)
                tcp_times += tcp_client.round_trips(requests // ROUNDS)
            lost = udp_client.lost
            for label, times in (("UDP", udp_times), ("TCP", tcp_times)):
                ms = [t * 1000 for t in times]
                print(
                    f"{label}: {len(ms)} round trips of {PAYLOAD} bytes: median "
                    f"{statistics.median(ms):.2f} ms, p95 {pct(ms, 0.95):.2f} ms, "
                    f"max {max(ms):.2f} ms"
                )
            print(f"UDP lost: {lost} of {requests} (target 0)")
            ratio = statistics.median(udp_times) / statistics.median(tcp_times)
            print(f"median UDP / TCP: {ratio:.2f}")
            print(guest_relay(env, pyd))
        finally:
            subprocess.run([*pyd, "delete", "-f", "-n", NAME], env=env, check=False)


# -- the helper's language ---------------------------------------------------------------

_PY_SHAPE = (
    "import selectors, socket, struct, sys\n"
    "sel = selectors.DefaultSelector(); sel.register(sys.stdin, selectors.EVENT_READ)\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "sel.register(s, selectors.EVENT_READ)\n"
    "while True:\n    sel.select()\n    if not sys.stdin.buffer.read1(65536): break\n"
)


def _rss_and_idle_cpu(argv: list[str], ready: float = 1.0) -> tuple[float, int]:
    """RSS (MiB) and CPU ticks over 5 s of a process started with a pipe on stdin, left idle."""
    # A session of its own: udpecho forks its TCP side, which goes with the group.
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        time.sleep(ready)
        return _measure(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _measure(pid: int) -> tuple[float, int]:
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS")
    )
    before = ticks()
    time.sleep(5)
    return rss / 1024, ticks() - before


def _perl_relay() -> tuple[float, int, float]:
    """udp-relay after one flow's datagram (its socket open), and its round trips/s."""
    sys.path.insert(0, str(REPO / "desktop"))
    from pyd.ports.udp_frames import FrameKind, FrameReader, encode

    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            data, peer = echo.recvfrom(65535)
            echo.sendto(data, peer)

    threading.Thread(target=serve, daemon=True).start()
    proc = subprocess.Popen(
        ["perl", str(RELAY), "127.0.0.1", str(echo.getsockname()[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    reader = FrameReader()
    n = 5000
    t0 = time.perf_counter()
    for i in range(n):
        proc.stdin.write(encode(FrameKind.DATA, i % 10 + 1, bytes(PAYLOAD)))
        while not reader.feed(os.read(proc.stdout.fileno(), 70000)):
            pass
    rate = n / (time.perf_counter() - t0)
    rss, idle = _measure(proc.pid)
    proc.stdin.close()
    proc.wait()
    return rss, idle, rate


def helpers() -> None:
    rss, idle, rate = _perl_relay()
    print(f"perl udp-relay: {rss:.1f} MiB RSS, {idle} ticks in 5 s idle, {rate:,.0f} rt/s")
    rss, idle = _rss_and_idle_cpu([sys.executable, "-c", _PY_SHAPE])
    print(f"python3 (same imports and loop): {rss:.1f} MiB RSS, {idle} ticks in 5 s idle")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "udpecho"
        build_static_echo(binary)
        size = binary.stat().st_size
        rss, idle = _rss_and_idle_cpu([str(binary), str(free_tcp_and_udp_port())])
        print(
            f"static C (udpecho.c): {rss:.1f} MiB RSS, {idle} ticks in 5 s idle, "
            f"{size / 1024:.0f} KiB binary"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", choices=["round-trips", "helpers"], default="round-trips")
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    if args.what == "helpers":
        helpers()
    else:
        request_response(args.requests)


if __name__ == "__main__":
    main()
