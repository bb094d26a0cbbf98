"""Faults of the agent's SSH link and of the VM under it, injected for real into one instance
(libvirt + QEMU under TCG, the host's docker CLI): the link dropped with iptables for 30 s, the
VM paused 60 s (virsh suspend), the data disk filled, QEMU killed; and a thousand API
connections at once. Each asserts what the user sees (`pyd status`, the docker CLI's message)
and how fast, that nothing leaks in the guest, and that a volume file and a share file written
before are intact.
Issue 13, items 4, 6 (the agent's side) and 9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import libvirt
import pytest

from pyd.agent.clock import STEP_OVER
from pyd.image.cache import CachedImage
from tests.e2e.faultinstance import FaultInstance, fault_instance, until
from tests.guest_clock import GuestClockProbe

pytestmark = pytest.mark.faults

NAME = "faultslink"
IMAGE = "pyd-e2e-faults-link-busybox"
NOTICED_WITHIN = 5.0  # issue 13: a dead link shows in `pyd status`
FAILS_WITHIN = 2.0  # a Docker call during the outage fails, with a message
BACK_WITHIN = 2.0  # Docker answers again after the link returns
LINK_DOWN_MESSAGE = "the SSH link to the VM is down"


def _docker_ps(
    it: FaultInstance, timeout: float = 30
) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    r = it.env.docker("ps", "-q", timeout=timeout, check=False)
    return time.monotonic() - t0, r


def _guest(it: FaultInstance, command: str) -> str:
    return it.env.pyd("ssh", "-n", NAME, "--", command, timeout=60).stdout


@pytest.fixture(scope="module")
def inst(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultInstance]:
    with fault_instance(NAME, IMAGE, tmp_path_factory) as it:
        yield it


def _dockerd_sockets(it: FaultInstance) -> int:
    """dockerd's open sockets in the guest: one per API connection, plus its own few."""
    out = _guest(it, "ls -l /proc/$(pidof dockerd)/fd | grep -c socket:")
    return int(out.strip())


def _settled_sockets(it: FaultInstance, baseline: int, seconds: float) -> float:
    """Seconds until dockerd holds no more sockets than `baseline` again."""
    return until(
        "dockerd's connections back to what they were",
        lambda: _dockerd_sockets(it) <= baseline,
        seconds,
        1.0,
    )


def _outage(it: FaultInstance, seconds: float, expect: str) -> list[float]:
    """While an outage lasts `seconds`: `docker ps` again and again, each failing fast with
    `expect`; their durations."""
    took = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t, r = _docker_ps(it)
        assert r.returncode != 0, r.stdout
        assert expect in r.stderr, r.stderr
        took.append(t)
        time.sleep(0.5)
    return took


def _back(it: FaultInstance) -> float:
    """Seconds until `docker ps` works again."""
    return until("docker answers again", lambda: _docker_ps(it)[1].returncode == 0, 60, 0.05)


def _healed(
    it: FaultInstance, fault: str, baseline: int, noticed: float, took: list[float], back: float
) -> None:
    """After an outage: its figures printed; status running, dockerd's connections back to
    `baseline` (nothing leaked) and the data intact; noticed and failed fast enough."""
    print(
        f"{fault}: noticed in {noticed:.2f} s, {len(took)} docker ps failed in "
        f"{min(took):.2f}-{max(took):.2f} s, back {back:.2f} s after the fault ended"
    )
    until("status running again", lambda: it.status()["state"] == "running", 10)
    settled = _settled_sockets(it, baseline, 90)
    print(f"dockerd's sockets back to {baseline} {settled:.1f} s after")
    it.assert_data_intact()
    assert noticed <= NOTICED_WITHIN
    assert max(took) <= FAILS_WITHIN


class _Dropped:
    """iptables rules dropping every packet to and from the instance's SSH port on loopback:
    the link is cut without a word, as by a firewall or a sleeping laptop."""

    def __init__(self, port: int) -> None:
        self.rules = [
            ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
            ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
        ]

    def __enter__(self) -> _Dropped:
        for rule in self.rules:
            subprocess.run(["iptables", "-I", *rule], check=True)
        return self

    def restore(self) -> None:
        for rule in self.rules:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self.restore()


def test_a_dropped_link_is_reported_fails_fast_and_heals(inst: FaultInstance) -> None:
    status = inst.status()
    assert status["state"] == "running"
    until("dockerd idle", lambda: _docker_ps(inst)[1].returncode == 0, 30)
    baseline = _dockerd_sockets(inst)
    with _Dropped(int(status["ssh_port"])) as dropped:
        t0 = time.monotonic()
        noticed = until(
            "status shows the dead link", lambda: inst.status()["state"] == "reconnecting", 15
        )
        status = inst.status()
        assert LINK_DOWN_MESSAGE in status["error"], status
        t1 = time.monotonic()  # `pyd docker` through the agent's exec socket: told as fast
        r = inst.env.pyd("docker", "-n", NAME, "--via-guest", "ps", check=False, timeout=60)
        via_guest = time.monotonic() - t1
        assert r.returncode != 0 and LINK_DOWN_MESSAGE in r.stderr, r.stderr
        took = _outage(inst, 30 - (time.monotonic() - t0), LINK_DOWN_MESSAGE)
        dropped.restore()
        back = _back(inst)
    print(f"link dropped: pyd docker told in {via_guest:.2f} s")
    _healed(inst, "link dropped 30 s", baseline, noticed, took, back)
    assert via_guest <= FAILS_WITHIN + 1  # + the start of a Python process
    assert back <= BACK_WITHIN


def test_a_paused_vm_is_reported_fails_fast_and_heals(inst: FaultInstance) -> None:
    conn = libvirt.open("qemu:///system")
    clock = GuestClockProbe(inst.root)
    try:
        until("dockerd idle", lambda: _docker_ps(inst)[1].returncode == 0, 30)
        baseline = _dockerd_sockets(inst)
        before = clock.estimate()
        assert before is not None and abs(before.offset) <= STEP_OVER, before
        dom = conn.lookupByName(inst.domain)
        dom.suspend()  # what `virsh suspend` does
        t0 = time.monotonic()
        noticed = until(
            "the agent says the VM is paused", lambda: inst.agent()["vm"] == "paused", 15
        )
        assert inst.agent()["error"] == "the VM is paused"
        took = _outage(inst, 60 - (time.monotonic() - t0), "the VM is paused")
        dom.resume()
        # The guest's clock stood still for 60 s: the agent steps it onto the host's.
        corrected = clock.seconds_until_within(STEP_OVER, 30)
        back = _back(inst)
    finally:
        clock.close()
        dom = conn.lookupByName(inst.domain)
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        conn.close()
    _healed(inst, "VM paused 60 s", baseline, noticed, took, back)
    print(f"VM paused 60 s: guest clock within {STEP_OVER * 1000:.0f} ms {corrected:.2f} s after")
    # The guest's clock and sshd wake with it: measured, not held to the link's 2 s (issue 18's
    # 2 s targets are bench/clock_sync.py's).
    assert back <= 10


def test_a_thousand_api_connections_at_once(inst: FaultInstance) -> None:
    host = inst.status()["docker_host"]
    assert host.startswith("unix://"), host
    path = host.removeprefix("unix://")
    n = 1000
    errors: list[str] = []
    answered: list[bool] = []
    start = threading.Barrier(n + 1)

    def ping() -> None:
        try:
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(300)
                start.wait(60)
                c.connect(path)
                c.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                reply = b""
                while chunk := c.recv(4096):
                    reply += chunk
                if not reply.startswith(b"HTTP/1.0 200") and not reply.startswith(b"HTTP/1.1 200"):
                    errors.append(reply[:200].decode(errors="replace"))
                else:
                    answered.append(True)
        except (OSError, threading.BrokenBarrierError) as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=ping) for _ in range(n)]
    for t in threads:
        t.start()
    start.wait(60)
    t0 = time.monotonic()
    for t in threads:
        t.join(330)
    took = time.monotonic() - t0
    print(
        f"{n} concurrent GET /_ping: {len(answered)} answered, {len(errors)} errors, {took:.1f} s"
    )
    assert errors[:5] == [] and len(answered) == n
    assert _docker_ps(inst)[1].returncode == 0


def test_a_full_data_disk_is_shown_and_nothing_is_lost(inst: FaultInstance) -> None:
    """Docker's data disk filled up (fallocate takes every free block, the reserve too):
    `pyd status` says so with the way out, Docker says why a container cannot start, the
    engine keeps answering, and once space is freed everything works with the data intact."""
    filler = "/var/lib/docker/pyd-e2e-filler"
    _guest(inst, f"fallocate -l 1T {filler}; sync; true")  # ENOSPC, keeping what it took
    try:
        shown = until(
            "status says the data disk is nearly full",
            lambda: "nearly full" in inst.status()["data_disk"],
            60,
            0.5,
        )
        print(f"full data disk: shown in {shown:.1f} s: {inst.status()['data_disk']!r}")
        r = inst.env.docker(
            "run", "--rm", "-v", "keep:/v", inst.image, "sh", "-c", "echo more > /v/more.txt",
            check=False,
        )  # fmt: skip
        assert r.returncode != 0
        assert "no space left on device" in r.stderr.lower(), r.stderr
        assert _docker_ps(inst)[1].returncode == 0  # the engine itself keeps answering
    finally:
        _guest(inst, f"rm -f {filler}; sync")
    inst.env.docker(
        "run", "--rm", "-v", "keep:/v", inst.image, "sh", "-c", "echo more > /v/more.txt"
    )
    inst.assert_data_intact()


def test_a_killed_vm_is_reported_at_once_and_pyd_start_brings_it_back(inst: FaultInstance) -> None:
    os.kill(inst.qemu_pid(), signal.SIGKILL)
    killed = time.time()

    noticed = until("the agent says so", lambda: inst.agent()["vm"] in ("stopped", "absent"), 30)
    status = inst.status()
    assert status["state"] == "stopped" and "stopped unexpectedly" in status["error"], status
    took, r = _docker_ps(inst)
    print(
        f"QEMU killed: status says so in {noticed:.2f} s ({status['error']!r}); docker ps "
        f"failed in {took:.2f} s: {r.stderr.strip()!r}"
    )
    log = (inst.root / "agent.log").read_text().splitlines()
    print("killed at", time.strftime("%H:%M:%S", time.gmtime(killed)), f"{killed % 1:.3f}")
    print("\n".join(line for line in log[-40:] if "pyd." in line))
    assert "pyd start" in status["hint"]
    assert r.returncode != 0 and "the VM stopped unexpectedly" in r.stderr
    assert "run `pyd start`" in r.stderr
    assert took <= FAILS_WITHIN
    assert noticed <= 2.0
    inst.env.pyd("start", "-n", NAME, timeout=600)
    assert inst.status()["state"] == "running"
    inst.assert_data_intact()


def test_the_agent_stops_at_once(inst: FaultInstance) -> None:
    """`pyd stop`'s agent part: the container watch no longer holds it for 5 s."""
    r = inst.env.pyd("stop", "-n", NAME, timeout=300)
    log = (inst.root / "agent.log").read_text()
    assert "stopping on request" in log
    closed = [line for line in log.splitlines() if "closed in" in line]
    print(f"pyd stop: {r.stderr.strip()!r}; agent: {closed[-1:]}")
    # "✓ host agent            0.31 s"
    agent_phase = [line for line in r.stderr.splitlines() if "host agent" in line]
    assert agent_phase, r.stderr
    seconds = float(agent_phase[0].split()[-2])
    assert seconds <= 1.5, agent_phase
