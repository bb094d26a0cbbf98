"""network.host_access against a real guest (libvirt + QEMU under TCG): by default a container
reaches a server on this machine's 127.0.0.1 at QEMU's gateway 10.0.2.2, as Docker Desktop's
host.docker.internal does; switched off with `pyd config set`, after the next start no
container reaches it, root or on the host network, while DNS at 10.0.2.3 still answers. One
instance for the module: it starts once with the default and once with the switch off."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.pydcli import PydEnv, build_static_tool_image, busybox_instance

NAME = "hostaccess"
IMAGE = "pyd-e2e-hostaccess-busybox"
RAW_IMAGE = "pyd-e2e-hostaccess-rawsyn"  # IMAGE with tests/e2e/rawsyn.c built static
GATEWAY = "10.0.2.2"  # QEMU's user network: this machine's loopback, seen from the guest
GATEWAY6 = "[fec0::2]"  # the same for IPv6 (this machine's ::1); the guest has it by RA


class LoopbackServer:
    """A TCP server on this machine's 127.0.0.1 that answers every connection with one HTTP
    reply, and counts the connections it accepted: a refused wget could hide a connection
    that got through, the count cannot."""

    def __init__(self, address: str = "127.0.0.1") -> None:
        self.token = uuid.uuid4().hex
        self.accepted = 0
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._sock = socket.create_server((address, 0), family=family)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        body = self.token.encode()
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            with conn:
                conn.settimeout(10)
                try:
                    conn.recv(4096)
                    conn.sendall(
                        b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture(scope="module")
def env(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PydEnv]:
    with busybox_instance(tmp_path_factory, NAME, IMAGE, "--memory", "1GiB", "--disk", "4GiB") as e:
        build_static_tool_image(e, tmp_path_factory.mktemp("rawsyn"), "rawsyn", IMAGE, RAW_IMAGE)
        yield e


def _raw_syn(env: PydEnv, port: int) -> str:
    """Root in an ordinary --network host container sends raw SYNs to the gateway; what
    rawsyn printed ("sent N": how many frames the kernel took)."""
    uplink = "$(ip route show default | awk '{print $5; exit}')"
    r = env.docker(
        "run", "--rm", "--network", "host", RAW_IMAGE, "sh", "-c",
        f"rawsyn {uplink} {GATEWAY} {port}",
    )  # fmt: skip
    return r.stdout.strip()


def _accepted_within(server: LoopbackServer, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while server.accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return server.accepted


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    s = LoopbackServer()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server6() -> Iterator[LoopbackServer]:
    s = LoopbackServer("::1")
    try:
        yield s
    finally:
        s.close()


def _wget(env: PydEnv, *run_args: str, url: str) -> tuple[int, str]:
    # Not as PID 1 (sh execs a lone last command): PID 1 would ignore timeout's SIGTERM
    # and wait out TCP's ~2 min of SYN retries.
    fetch = f"timeout 6 wget -q -O - {url}; exit $?"
    r = env.docker("run", "--rm", *run_args, IMAGE, "sh", "-c", fetch, check=False)
    return r.returncode, r.stdout + r.stderr


def test_by_default_a_container_reaches_the_hosts_loopback(
    env: PydEnv, server: LoopbackServer, server6: LoopbackServer
) -> None:
    code, out = _wget(env, url=f"http://{GATEWAY}:{server.port}/")
    assert (code, out.strip()) == (0, server.token)
    assert server.accepted == 1
    # Docker networks have no IPv6 by default; the guest's own network has.
    code, out = _wget(env, "--network", "host", url=f"http://{GATEWAY6}:{server6.port}/")
    assert (code, out.strip()) == (0, server6.token)


def test_by_default_a_raw_syn_makes_qemu_connect_to_the_hosts_loopback(env: PydEnv) -> None:
    """What the rules must stop, shown on the open path: slirp connects to the host on a
    SYN alone, even one the guest's TCP stack never sent."""
    raw = LoopbackServer()
    try:
        assert _raw_syn(env, raw.port) == "sent 3"
        assert _accepted_within(raw, 10) >= 1
    finally:
        raw.close()


def test_host_access_off_cuts_the_hosts_loopback_at_the_next_start(
    env: PydEnv, server: LoopbackServer, server6: LoopbackServer
) -> None:
    r = env.pyd("config", "set", "-n", NAME, "network.host_access", "false")
    assert "applies at the next start" in r.stderr
    config = env.home / "instances" / NAME / "config.toml"
    assert "[network]\nhost_access = false" in config.read_text()
    env.pyd("stop", "-n", NAME)
    env.pyd("start", "-n", NAME)

    url = f"http://{GATEWAY}:{server.port}/"
    # Root in ordinary containers, on a bridge and on the guest's own network, and the
    # guest itself: nothing reaches the host's loopback, not even the TCP handshake.
    for run_args in ((), ("--network", "host")):
        code, out = _wget(env, *run_args, url=url)
        assert code != 0 and server.token not in out, (run_args, out)
    guest = env.pyd("ssh", "-n", NAME, "--", f"timeout 6 busybox wget -q -O - {url}", check=False)
    assert guest.returncode != 0 and server.token not in guest.stdout
    code, out = _wget(env, "--network", "host", url=f"http://{GATEWAY6}:{server6.port}/")
    assert code != 0 and server6.token not in out
    # Raw frames (CAP_NET_RAW is in Docker's default set) meet the same rule: the kernel
    # refuses every one, whatever protocol the socket claims.
    assert _raw_syn(env, server.port) == "sent 0"
    assert _accepted_within(server, 3) == 0
    assert (server.accepted, server6.accepted) == (0, 0)

    # The rule is specific to the host: DNS at 10.0.2.3 still answers (NXDOMAIN is an
    # answer; a dropped query would time out), and Docker still works.
    r = env.docker(
        "run", "--rm", IMAGE, "nslookup", f"pyd-{uuid.uuid4().hex[:8]}.invalid", "10.0.2.3",
        check=False,
    )  # fmt: skip
    assert "NXDOMAIN" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "timed out" not in r.stdout + r.stderr


def test_a_root_container_cannot_lift_the_rules(env: PydEnv) -> None:
    """The rules live in the guest's network namespace; Docker's default capabilities have
    no CAP_NET_ADMIN there, so not even root on the host network may change them."""
    r = env.docker(
        "run", "--rm", "--network", "host", IMAGE, "sh", "-c",
        "ip addr add 192.0.2.77/32 dev lo; echo code=$?",
        check=False,
    )  # fmt: skip
    assert "code=0" not in r.stdout, r.stdout
    rules = env.pyd("ssh", "-n", NAME, "--", "nft list table netdev pyd_host_access").stdout
    assert "hook egress" in rules and "policy drop" in rules
