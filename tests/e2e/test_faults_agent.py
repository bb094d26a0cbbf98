"""Faults of the host agent and of the VM's process, injected for real into one instance
(libvirtd + QEMU under TCG, the host's docker CLI): the agent killed once (its keeper starts
it again: Docker, a published port and a share back within 2 s) and in a loop (the keeper
gives up and says so; `pyd start` recovers); the VM paused with libvirt (status says so;
`pyd start` resumes it, containers still up); QEMU killed (status keeps the cause; `pyd
start` boots it again with a volume file and a share file intact)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from pyd.host.loopback import free_loopback_port
from pyd.image.cache import CachedImage
from tests.e2e.faultinstance import FaultInstance, fault_instance, until

pytestmark = pytest.mark.faults

NAME = "faultsagent"
IMAGE = "pyd-e2e-faults-agent-busybox"
BACK_WITHIN = 2.0  # issue 13: Docker, ports and shares back this soon after a kill -9


@dataclass(frozen=True)
class Instance(FaultInstance):
    port: int  # where the container `web` publishes its httpd


@pytest.fixture(scope="module")
def inst(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    port = free_loopback_port()
    with fault_instance(NAME, IMAGE, tmp_path_factory) as base:
        base.env.docker(
            "run", "-d", "--name", "web", "--restart", "unless-stopped",
            "-p", f"127.0.0.1:{port}:80", "-v", f"{base.share}:/share", IMAGE, "sh", "-c",
            "mkdir -p /www && echo hello > /www/index.html && ln -s /share /www/share && "
            "exec httpd -f -p 80 -h /www",
        )  # fmt: skip
        it = Instance(base.env, base.name, base.share, base.image, port)
        until("the port published", lambda: _port_answers(it), 60, 0.2)
        yield it


def _docker_answers(it: Instance) -> bool:
    return it.env.docker("ps", "-q", timeout=10, check=False).returncode == 0


def _port_answers(it: Instance) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{it.port}/", timeout=2) as r:
        return bool(r.read() == b"hello\n")


def _share_remounted(it: Instance, old_agent: int) -> bool:
    """The new agent (not `old_agent`) reports the share mounted, in its status file itself:
    cheap enough to poll often while the agent restarts on a host of two cores."""
    status = it.agent()
    return status["pid"] != old_agent and any(
        m["location"] == str(it.share) and m["state"] == "mounted" for m in status["mounts"]
    )


def _container_reads_share(it: Instance, name: str, text: str) -> bool:
    """The running container `web` reads a host file through the share it holds, and serves
    it on the published port (a `docker exec` would cost more than the 2 s measured)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{it.port}/share/{name}", timeout=2) as r:
        return bool(r.read() == text.encode())


def _reads_share(it: Instance, name: str) -> str:
    return it.env.docker("run", "--rm", "-v", f"{it.share}:/s", IMAGE, "cat", f"/s/{name}").stdout


def _agent_pid(it: Instance) -> int:
    pid = it.status()["agent_pid"]
    assert isinstance(pid, int), it.status()
    return pid


def _first_success(checks: dict[str, Callable[[], bool]], seconds: float) -> dict[str, float]:
    """Seconds from now until each check first holds, each polled in a thread of its own so
    that one slow check (a `pyd status` costs ~0.3 s) does not delay the clock of another."""
    t0 = time.monotonic()
    found: dict[str, float] = {}

    def poll(name: str, check: Callable[[], bool]) -> None:
        with contextlib.suppress(AssertionError):
            until(name, check, seconds, step=0.1)
            found[name] = time.monotonic() - t0

    threads = [threading.Thread(target=poll, args=item) for item in checks.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = set(checks) - set(found)
    assert not missing, f"not back within {seconds} s: {missing}"
    return found


def test_a_killed_agent_comes_back_by_itself(inst: Instance) -> None:
    first = _agent_pid(inst)
    os.kill(first, signal.SIGKILL)
    (inst.share / "after-kill.txt").write_text("written after the kill\n")
    back = _first_success(
        {
            "docker": lambda: _docker_answers(inst),
            "port": lambda: _port_answers(inst),
            "share": lambda: _container_reads_share(
                inst, "after-kill.txt", "written after the kill\n"
            ),
            "share remounted": lambda: _share_remounted(inst, first),
        },
        30,
    )
    print(
        "after kill -9 of the agent, back in: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in back.items())
    )
    log = (inst.root / "agent.log").read_text().splitlines()
    died = max(i for i, line in enumerate(log) if "the agent died" in line)
    print("\n".join(log[died : died + 20]))
    assert _agent_pid(inst) != first
    status = inst.status()
    print(f"the new agent's phases: {status['phases']}")
    assert status["state"] == "running"
    assert "agent restarted after it died (signal 9)" in status["keeper"]
    assert _reads_share(inst, "before.txt") == "written before the faults\n"
    # What users see within 2 s; the new agent's own mount follows (reported, not a target:
    # running containers keep the share they hold, served by the dead agent's share sessions).
    assert max(back["docker"], back["port"], back["share"]) <= BACK_WITHIN, back
    assert back["share remounted"] <= 10, back


def test_a_paused_vm_is_shown_paused_and_pyd_start_resumes_it(inst: Instance) -> None:
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(inst.domain).suspend()  # what `virsh suspend` does
        status = inst.status()
        assert (status["state"], status["vm"]) == ("paused", "paused")
        assert "pyd start" in status["hint"]
        r = inst.env.pyd("start", "-n", NAME, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        state, _reason = conn.lookupByName(inst.domain).state()
        assert state == libvirt.VIR_DOMAIN_RUNNING
    finally:
        dom = conn.lookupByName(inst.domain)
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
        conn.close()
    assert inst.status()["state"] == "running"
    running = inst.env.docker("ps", "--filter", "name=web", "--format", "{{.Status}}").stdout
    assert running.startswith("Up"), running
    until("the published port answers", lambda: _port_answers(inst), 30)


def test_a_crash_loop_gives_up_says_so_and_pyd_start_recovers(inst: Instance) -> None:
    killed: list[int] = []
    deadline = time.monotonic() + 60
    while not inst.keeper()["gave_up"]:
        assert time.monotonic() < deadline, f"the keeper never gave up: {inst.keeper()}"
        pid = int(inst.keeper()["agent_pid"])
        if pid and pid not in killed:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    # Five crashes within a minute, counting the first test's kill when it was that recent.
    assert inst.keeper()["crashes"] == 5 and len(killed) >= 4, (killed, inst.keeper())
    status = inst.status()
    assert status["state"] == "degraded"
    assert "gave up" in status["error"]
    assert "pyd start" in status["hint"]
    assert status["keeper"].startswith("gave up after 5 crashes")
    assert inst.env.docker("ps", timeout=30, check=False).returncode != 0
    inst.env.pyd("start", "-n", NAME, timeout=300)
    status = inst.status()
    assert status["state"] == "running"
    assert status["keeper"] == "watching the agent"
    assert _docker_answers(inst)
    until("the published port answers", lambda: _port_answers(inst), 30)


def test_a_killed_vm_keeps_its_cause_and_pyd_start_brings_it_back(inst: Instance) -> None:
    (inst.share / "later.txt").write_text("written before QEMU died\n")
    inst.env.docker(
        "run", "--rm", "-v", "keep:/v", IMAGE, "sh", "-c",
        "echo written before QEMU died > /v/later.txt && sync",
    )  # fmt: skip
    os.kill(inst.qemu_pid(), signal.SIGKILL)
    t0 = time.monotonic()

    def cause_shown() -> bool:
        s = inst.status()
        return bool(s["state"] == "stopped" and s["error"] and "pyd start" in s["hint"])

    # The agent's own detection (issue 13, item 6) is tested in test_faults_link.py; here the
    # cause must be there and stay there, however long the agent took.
    until("status gives the cause", cause_shown, 90, 0.2)
    print(
        f"after kill -9 of QEMU: status gives the cause in {time.monotonic() - t0:.2f} s: "
        f"{inst.status()['error']!r}"
    )
    time.sleep(3)
    assert cause_shown(), inst.status()  # kept, not replaced by a bare "stopped"
    inst.env.pyd("start", "-n", NAME, timeout=600)
    assert inst.status()["state"] == "running"
    read = inst.env.docker(
        "run", "--rm", "-v", "keep:/v", IMAGE, "cat", "/v/before.txt", "/v/later.txt"
    ).stdout
    assert read == "written before the faults\nwritten before QEMU died\n"
    until("the share is mounted", inst.share_mounted, 120, 0.2)
    assert _reads_share(inst, "later.txt") == "written before QEMU died\n"
    # --restart unless-stopped: the engine starts it again, and pyd publishes its port.
    until("the published port answers", lambda: _port_answers(inst), 120, 0.2)


def _processes_of(root: Path) -> list[str]:
    """Command lines naming the instance directory: keeper, agent, standby, share sessions.
    From /proc itself: ps cuts its lines to 80 columns when it writes to a pipe."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(root) in args:
                found.append(f"{cmdline.parent.name} {args}")
    return found


def test_delete_ends_keeper_agent_and_standby(inst: Instance) -> None:
    """Last: the instance goes (the fixture's own delete then finds nothing)."""

    def all_there() -> bool:
        procs = "\n".join(_processes_of(inst.root))
        return "pyd.agent.keeper" in procs and "pyd.agent.main import main" in procs

    try:
        until("keeper, agent and a standby run", all_there, 30)
    except AssertionError:
        log = (inst.root / "agent.log").read_text().splitlines()[-30:]
        raise AssertionError(
            "\n".join(["no keeper or standby:", *_processes_of(inst.root), *log])
        ) from None
    inst.env.pyd("delete", "-f", "-n", NAME)
    until("nothing of the instance runs", lambda: not _processes_of(inst.root), 15, 0.2)
