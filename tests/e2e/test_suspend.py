"""`pyd suspend` and the resume at `pyd start` on a real VM (TCG here), under libvirt and
under direct QEMU (the POSIX way: QEMU 7.2 migrates to the file through a descriptor passed
on the Unix-socket monitor): containers run on where they were, a changed setting never
resumes silently, a corrupt save boots afresh with Docker's volumes intact, and `pyd delete`
takes the save along. One instance per backend: each VM boot costs tens of seconds under
TCG."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyd.agent.clock import STEP_OVER
from pyd.host.loopback import free_loopback_port
from pyd.image.cache import CachedImage
from tests.e2e.backend_param import QEMU_POSIX, backend_env
from tests.e2e.pydcli import PydEnv, build_busybox_image, fetch, wait_mounted
from tests.guest_clock import GuestClockProbe

NAME = "susp"
DOMAIN = f"pyd-{NAME}"
IMAGE = "pyd-e2e-suspend-busybox"
# Written aside and renamed: a reader never sees the file truncated and not yet written.
COUNTER = (
    "mkdir -p /tmp; i=0; while true; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; "
    "sleep 1; done"
)


@pytest.fixture(scope="module", params=("libvirt", QEMU_POSIX))
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def env(
    backend: str, image: CachedImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PydEnv]:
    home, docker_config = tmp_path_factory.mktemp("pyd-home"), tmp_path_factory.mktemp("dc")
    e = backend_env(backend, home, docker_config, NAME)
    try:
        e.pyd("start", "-n", NAME, "--memory", "1GiB")
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        e.docker("volume", "create", "keep")
        e.docker("run", "--rm", "-v", "keep:/data", IMAGE, "sh", "-c", "echo kept > /data/proof")
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _root(env: PydEnv) -> Path:
    return env.home / "instances" / NAME


def _domstate() -> str:
    r = subprocess.run(
        ["virsh", "-c", "qemu:///system", "domstate", DOMAIN], capture_output=True, text=True
    )
    return r.stdout.strip() or r.stderr.strip()


def _qemus(env: PydEnv) -> list[str]:
    """The command lines of the QEMU processes that hold this instance's OS disk."""
    disk = str(_root(env) / "os.qcow2")
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if b"qemu-system" in argv[0] and any(disk.encode() in a for a in argv):
            found.append(b" ".join(argv).decode(errors="replace"))
    return found


def _vm_off(env: PydEnv, backend: str) -> bool:
    """No QEMU holds the instance's disks (libvirt: its domain is shut off)."""
    if backend == "libvirt":
        return _domstate() == "shut off"
    return not _qemus(env)


def _suspend(env: PydEnv, backend: str) -> float:
    assert not _vm_off(env, backend)  # so the check below can fail
    began = time.monotonic()
    said = env.pyd("suspend", "-n", NAME).stderr
    took = time.monotonic() - began
    print(said)
    save = _root(env) / "suspend.save"
    assert _vm_off(env, backend)  # no QEMU holds the disks
    assert stat.S_IMODE(save.stat().st_mode) == 0o600
    assert stat.S_IMODE((_root(env) / "suspend.json").stat().st_mode) == 0o600
    du_kib = int(
        subprocess.run(["du", "-k", str(save)], capture_output=True, text=True).stdout.split()[0]
    )
    print(
        f"pyd suspend {took:.2f} s; save {save.stat().st_size >> 20} MiB, "
        f"{du_kib >> 10} MiB on disk"
    )
    return took


def _start_until_docker(env: PydEnv, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    began = time.monotonic()
    r = env.pyd("start", "-n", NAME, *args)
    while env.docker("version", check=False).returncode != 0:
        time.sleep(0.05)
    return time.monotonic() - began, r


def _counter(env: PydEnv, container: str) -> int:
    return int(env.docker("exec", container, "cat", "/tmp/n").stdout)


def test_containers_run_on_after_suspend_and_start(
    env: PydEnv, backend: str, tmp_path: Path
) -> None:
    port = free_loopback_port()
    env.docker("run", "-d", "--name", "count", IMAGE, "sh", "-c", COUNTER)
    env.docker(
        "run", "-d", "--name", "web", "-p", f"{port}:80", IMAGE, "sh", "-c",
        "mkdir /www && echo web-before > /www/id && exec httpd -f -p 80 -h /www",
    )  # fmt: skip
    assert fetch(f"http://127.0.0.1:{port}/id").decode().strip() == "web-before"
    # A container whose bind into a share must work on after the resume.
    shared = tmp_path / "shared"
    shared.mkdir()
    env.pyd("mount", "add", str(shared), "-n", NAME)
    wait_mounted(env, NAME, shared)
    env.docker("run", "-d", "--name", "bound", "-v", f"{shared}:/s", IMAGE, "sleep", "100000")
    before = env.docker("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", "count").stdout
    time.sleep(2)
    counted = _counter(env, "count")

    _suspend(env, backend)
    assert env.status(NAME)["state"] == "suspended"
    env.pyd("stop", "-n", NAME)  # must not drop the save: the guest's memory is in it
    assert (_root(env) / "suspend.save").exists()

    took, r = _start_until_docker(env)
    print(r.stderr)
    print(f"pyd start of the suspended instance until `docker version` answers: {took:.2f} s")
    assert env.status(NAME)["state"] == "running"
    assert not (_root(env) / "suspend.save").exists()
    assert not (_root(env) / "suspend.json").exists()
    # The same container, not restarted: its counter went on from where it was.
    assert env.docker("inspect", "-f", "{{.Id}} {{.State.StartedAt}}", "count").stdout == before
    assert _counter(env, "count") >= counted
    time.sleep(2)
    assert _counter(env, "count") > counted
    assert fetch(f"http://127.0.0.1:{port}/id").decode().strip() == "web-before"
    # The share, through the running container's own bind: a file the host writes now.
    (shared / "after").write_text("after the resume\n")
    assert _read_until(env, "bound", "/s/after") == "after the resume\n"
    # The guest's clock stood still while suspended: the agent stepped it onto the host's.
    clock = GuestClockProbe(_root(env))
    try:
        clock.seconds_until_within(STEP_OVER, 10)
    finally:
        clock.close()
    env.docker("rm", "-f", "bound")
    env.pyd("mount", "rm", str(shared), "-n", NAME)


def _read_until(env: PydEnv, container: str, path: str, seconds: float = 30) -> str:
    end = time.monotonic() + seconds
    while True:
        r = env.docker("exec", container, "cat", path, check=False)
        if r.returncode == 0 or time.monotonic() > end:
            return r.stdout
        time.sleep(0.2)


def test_a_changed_memory_never_resumes_silently_and_restart_applies_it(
    env: PydEnv, backend: str
) -> None:
    env.docker("rm", "-f", "web", check=False)
    _suspend(env, backend)
    r = env.pyd("start", "-n", NAME, "--memory", "1536MiB", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    said = " ".join(r.stderr.split())
    assert "memory 1 GiB -> 1536 MiB" in said and "--restart" in said
    assert (_root(env) / "suspend.save").exists() and _vm_off(env, backend)
    assert env.status(NAME)["state"] == "suspended"

    took, _ = _start_until_docker(env, "--restart")
    print(f"pyd start --restart (resume, clean shutdown, boot): {took:.2f} s")
    st = env.status(NAME)
    assert st["state"] == "running" and st["memory_mib"] == 1536
    assert not (_root(env) / "suspend.save").exists()
    # A fresh boot: the counter's container was stopped with the VM.
    state = env.docker("inspect", "-f", "{{.State.Running}}", "count").stdout.strip()
    assert state == "false"


def test_a_corrupt_save_boots_afresh_with_the_volume_intact(env: PydEnv, backend: str) -> None:
    _suspend(env, backend)
    save = _root(env) / "suspend.save"
    with save.open("r+b") as f:
        f.truncate(save.stat().st_size // 3)
    r = env.pyd("start", "-n", NAME)
    said = " ".join(r.stderr.split())
    assert "cannot be resumed" in said and "suspend.save.failed" in said, said
    assert (_root(env) / "suspend.save.failed").exists() and not save.exists()
    assert env.status(NAME)["state"] == "running"
    proof = env.docker("run", "--rm", "-v", "keep:/data", IMAGE, "cat", "/data/proof")
    assert proof.stdout.strip() == "kept"


def test_delete_of_a_suspended_instance_removes_the_save_and_the_domain(
    env: PydEnv, backend: str
) -> None:
    _suspend(env, backend)
    env.pyd("delete", "-f", "-n", NAME)
    assert not _root(env).exists()
    if backend == "libvirt":
        assert "failed to get domain" in _domstate()
    else:
        assert not _qemus(env)
    listed = json.loads(env.pyd("list", "--json").stdout)
    assert all(i["name"] != NAME for i in listed)
