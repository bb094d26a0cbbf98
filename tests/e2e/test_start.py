"""`pyd start` end to end: real libvirtd, QEMU under TCG, the host's docker CLI through
pyd's socket and context. The tests run in file order on one instance; each leaves it
running, the last one deletes it."""

from __future__ import annotations

import concurrent.futures
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import psutil
import pytest

from pyd.host.process_identity import is_running
from pyd.host.procs import pid_alive
from pyd.image.cache import CachedImage
from pyd.instance.files import InstanceFiles
from pyd.lifecycle.agent_proc import (
    agent_identity,
    agent_running,
    keeper_identity,
    keeper_running,
    stop_agent,
)
from pyd.ssh.keys import generate_keypair, write_private
from tests.e2e.pydcli import PydEnv, build_busybox_image, cut_agent_ssh, remove_domain
from tests.unit.polling import until

ENGINE_VERSION = re.compile(r"\d+\.\d+\.\d+\S*")  # the guest engine's, e.g. 26.1.5+dfsg1

DOMAIN = "pyd-default"
# Lookups of absent domains are expected here; keep libvirt from printing them.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _domain_state(name: str = DOMAIN) -> int | None:
    conn = libvirt.open("qemu:///system")
    try:
        return int(conn.lookupByName(name).state()[0])
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pyd_env(image: CachedImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PydEnv]:
    """A started default instance in a temporary PYD_HOME; deleted afterwards, whatever
    the tests did."""
    try:
        libvirt.open("qemu:///system").close()
    except libvirt.libvirtError as e:
        pytest.fail(f"libvirtd does not answer ({e}); start it: packaging/linux/start-libvirt")
    assert _domain_state() is None, f"a {DOMAIN} domain exists already on this host"
    # PYD_HOME is made by pyd, in a directory every user may enter (pytest's own are 0700):
    # only pyd's modes then keep another user out.
    open_dir = Path(tempfile.mkdtemp(prefix="pyd-e2e-"))
    open_dir.chmod(0o755)
    env = PydEnv(open_dir / "home", tmp_path_factory.mktemp("docker-config"))
    try:
        r = env.pyd("start", "--cpus", "2", "--memory", "2GiB", "--disk", "8GiB")
        assert "is running" in r.stderr
        yield env
    finally:
        env.pyd("delete", "-f", check=False)
        remove_domain(DOMAIN)
        shutil.rmtree(open_dir, ignore_errors=True)


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


def _assert_private(home: Path) -> None:
    """Every directory pyd made 0700 and every file 0600, and another local user (nobody)
    can read none of the instance's files: neither the disks (Docker's data) nor the keys,
    logs, settings and state."""
    assert _as_nobody("cat", "/etc/hostname").returncode == 0  # the check itself can pass
    root = home / "instances" / "default"
    modes = {}
    for path in [home, home / "instances", *root.rglob("*")]:
        if not path.is_symlink():
            modes[str(path.relative_to(home))] = stat.S_IMODE(path.lstat().st_mode)
    want = {name: 0o700 if (home / name).is_dir() else 0o600 for name in modes}
    assert modes == want
    for name in ("data.qcow2", "os.qcow2", "serial.log", "agent.log", "agent.json",
                 "config.toml", "state.json", "ssh/id_ed25519", "ssh/host_ed25519"):
        assert name in {str(p.relative_to(root)) for p in root.rglob("*")}, name
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in files:
        r = _as_nobody("cat", str(path))
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r)
    r = _as_nobody("ls", str(root))
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_start_makes_pyd_the_current_context_and_docker_answers(pyd_env: PydEnv) -> None:
    assert pyd_env.docker("context", "show").stdout.strip() == "pyd"
    root = pyd_env.docker("info", "--format", "{{.DockerRootDir}} {{.Driver}}").stdout.split()
    assert root == ["/var/lib/docker", "overlay2"]


def test_docker_socket_is_private_and_nothing_listens_beyond_loopback(pyd_env: PydEnv) -> None:
    sock = pyd_env.home / "instances" / "default" / "sock" / "docker.sock"
    assert (sock.stat().st_mode & 0o777) == 0o600
    assert (sock.parent.stat().st_mode & 0o777) == 0o700
    port = pyd_env.status()["ssh_port"]
    listening = Path("/proc/net/tcp").read_text() + Path("/proc/net/tcp6").read_text()
    local = [line.split()[1] for line in listening.splitlines()[1:] if line.split()[3] == "0A"]
    ours = [addr for addr in local if int(addr.rsplit(":", 1)[1], 16) == port]
    assert ours == ["0100007F:" + f"{port:04X}"], ours


def test_instance_files_are_unreadable_to_other_users(pyd_env: PydEnv) -> None:
    _assert_private(pyd_env.home)


def test_build_and_run_an_image_through_the_context(pyd_env: PydEnv, tmp_path: Path) -> None:
    build_busybox_image(pyd_env, tmp_path, "pyd-e2e-busybox")
    token = uuid.uuid4().hex
    r = pyd_env.docker("run", "--rm", "pyd-e2e-busybox", "echo", token)
    assert r.stdout.strip() == token
    # stdin reaches the container and its end is seen (half-close through the forward)
    r = pyd_env.docker("run", "--rm", "-i", "pyd-e2e-busybox", "wc", "-c", input="x" * 1000)
    assert r.stdout.strip() == "1000"


def test_status_json_reports_the_running_instance(pyd_env: PydEnv) -> None:
    st = pyd_env.status()
    assert st["state"] == "running" and st["vm"] == "running" and st["agent"] == "ready"
    assert st["docker_host"].startswith("unix://") and st["context"] == "pyd"
    # backend auto booted it under libvirt (its daemon answers here) and keeps to it
    assert (st["backend"], st["backend_reason"]) == ("libvirt", "recorded when it booted")
    assert (st["cpus"], st["memory_mib"], st["disk_gib"]) == (2, 2048, 8)
    assert re.fullmatch(r"\d+\.\d GiB of 7\.\d GiB used \(\d+%\)", st["data_disk"]), st
    # asked by the agent once ready (guestdocker/platforms.py): native first, then emulated
    platforms = until(lambda: pyd_env.status()["platforms"], timeout=60, step=1, what="platforms")
    assert platforms == ["linux/amd64", "linux/arm64"]
    assert pid_alive(st["agent_pid"])
    assert {"ssh", "engine"} <= set(st["phases"])
    listed = pyd_env.pyd("list").stdout
    assert "default" in listed and "running" in listed
    # the backend finds the VM: changing it under a running VM would orphan the VM
    r = pyd_env.pyd("config", "set", "backend", "qemu", check=False)
    assert r.returncode == 2 and "pyd stop" in r.stderr


def test_pyd_ssh_runs_a_command_and_returns_its_exit_code(pyd_env: PydEnv) -> None:
    r = pyd_env.pyd("ssh", "--", "cat /etc/hostname; exit 7", check=False)
    assert r.returncode == 7 and r.stdout.strip() == "pyd"


def test_docker_works_across_a_dropped_ssh_connection(pyd_env: PydEnv) -> None:
    """Kill the guest side of the agent's SSH connection: the agent reconnects and the
    next docker command is carried without the user doing anything."""
    agent_log = pyd_env.home / "instances" / "default" / "agent.log"
    seen = agent_log.stat().st_size
    cut_agent_ssh(pyd_env)
    r = pyd_env.docker("version", "--format", "{{.Server.Version}}", timeout=60)
    assert ENGINE_VERSION.fullmatch(r.stdout.strip()), r.stdout

    def since_the_cut() -> str:
        with agent_log.open("rb") as f:
            f.seek(seen)
            return f.read().decode(errors="replace")

    # Whichever part sees the drop first says so: the heartbeat, the session or the health
    # verdict; the return is always told.
    down = ("SSH link dead", "the SSH link to the VM is down", "reconnecting:")

    def told() -> bool:
        log = since_the_cut()
        return any(s in log for s in down) and "SSH back after" in log

    try:
        until(told, timeout=30, step=0.2)
    except AssertionError:
        raise AssertionError(f"no drop and return in the agent's log:\n{since_the_cut()}") from None
    assert pyd_env.status()["state"] == "running"


def test_start_refuses_a_guest_with_another_host_key(pyd_env: PydEnv) -> None:
    """The agent is gone (its keeper too: it would restart it); the pinned key no longer
    matches the guest's: start must refuse and say so, then work again once the right key
    is back."""
    files = pyd_env.home / "instances" / "default"
    key = files / "ssh" / "host_ed25519"
    saved = key.read_bytes(), key.with_suffix(".pub").read_bytes()
    stop_agent(InstanceFiles(files))
    assert pyd_env.status()["state"] == "degraded"
    other = generate_keypair("impostor")
    write_private(key, other.private_openssh)
    key.with_suffix(".pub").write_text(other.public_openssh + "\n")
    try:
        r = pyd_env.pyd("start", check=False)
        assert r.returncode == 1
        assert "different host key" in r.stderr and "Traceback" not in r.stderr
    finally:
        key.write_bytes(saved[0])
        key.with_suffix(".pub").write_bytes(saved[1])
    pyd_env.pyd("start")
    assert pyd_env.status()["state"] == "running"


def test_stop_with_a_corrupt_config_then_new_keys_after_a_lost_one(pyd_env: PydEnv) -> None:
    """A damaged config.toml does not keep `pyd stop` from stopping the VM; a lost client
    key is reported, not replaced behind the user's back, and `pyd start --new-keys` gets
    the instance back with its data; files an older pyd left readable are made private at
    that start."""
    root = pyd_env.home / "instances" / "default"
    token = uuid.uuid4().hex
    pyd_env.docker("volume", "create", "pyd-e2e-keys")
    pyd_env.docker(
        "run", "--rm", "-v", "pyd-e2e-keys:/v", "pyd-e2e-busybox", "sh", "-c",
        f"echo {token} > /v/token",
    )
    config = root / "config.toml"
    saved = config.read_text()
    config.write_text("cpus = [unclosed\n")
    r = pyd_env.pyd("stop", check=False)
    assert r.returncode == 0 and "stopped" in r.stderr, r.stderr
    assert _domain_state() == libvirt.VIR_DOMAIN_SHUTOFF
    assert config.read_text() == "cpus = [unclosed\n"
    config.write_text(saved)

    old_key = (root / "ssh" / "id_ed25519.pub").read_text()
    (root / "ssh" / "id_ed25519").unlink()
    r = pyd_env.pyd("start", check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "ssh/id_ed25519" in r.stderr and "pyd start --new-keys" in r.stderr
    assert not (root / "ssh" / "id_ed25519").exists()
    assert _domain_state() == libvirt.VIR_DOMAIN_SHUTOFF  # nothing booted on a missing key

    # As an older pyd left them: readable by all.
    for path in [pyd_env.home, pyd_env.home / "instances", *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    pyd_env.pyd("start", "--new-keys")
    assert (root / "ssh" / "id_ed25519.pub").read_text() != old_key
    r = pyd_env.pyd("ssh", "--", "cat /etc/hostname")
    assert r.stdout.strip() == "pyd"
    r = pyd_env.docker("run", "--rm", "-v", "pyd-e2e-keys:/v", "pyd-e2e-busybox", "cat", "/v/token")
    assert r.stdout.strip() == token
    home_mode = stat.S_IMODE(pyd_env.home.stat().st_mode)
    pyd_env.home.chmod(0o700)  # the user's: pyd made it once, and does not touch it again
    try:
        _assert_private(pyd_env.home)
    finally:
        pyd_env.home.chmod(home_mode)


def _qemu_of(domain: str) -> list[int]:
    """QEMU processes running `domain` (libvirt names the guest on QEMU's command line)."""
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if f"guest={domain}," in " ".join(p.info["cmdline"] or ())
    ]


def test_volume_survives_stop_and_two_concurrent_starts_make_one_vm(pyd_env: PydEnv) -> None:
    """`pyd stop` stops a running container with its stop signal (its SIGTERM handler's write
    to a volume survives), and leaves no keeper, agent, QEMU or Docker socket behind."""
    token = uuid.uuid4().hex
    pyd_env.docker("volume", "create", "pyd-e2e-vol")
    pyd_env.docker(
        "run", "--rm", "-v", "pyd-e2e-vol:/v", "pyd-e2e-busybox", "sh", "-c",
        f"echo {token} > /v/token",
    )
    # `wait` returns as soon as a trapped signal arrives; a SIGKILL would leave no marker.
    handler = "echo stopped-by-TERM > /v/term; sync; exit 0"
    pyd_env.docker(
        "run", "-d", "--name", "pyd-e2e-trap", "-v", "pyd-e2e-vol:/v", "pyd-e2e-busybox",
        "sh", "-c", f"rm -f /v/term; trap '{handler}' TERM; sleep 3600 & wait $!",
    )
    until(
        lambda: pyd_env.docker("inspect", "-f", "{{.State.Running}}", "pyd-e2e-trap").stdout
        == "true\n",
        60,
        0.5,
        "the trapping container runs",
    )
    files = InstanceFiles(pyd_env.home / "instances" / "default")
    keeper, agent = keeper_identity(files), agent_identity(files)
    assert keeper is not None and agent is not None and files.docker_sock.exists()
    assert _qemu_of(DOMAIN)
    pyd_env.pyd("stop")
    assert _domain_state() == libvirt.VIR_DOMAIN_SHUTOFF
    assert pyd_env.status()["state"] == "stopped"
    assert not is_running(keeper) and not is_running(agent)
    assert not keeper_running(files) and not agent_running(files)
    assert _qemu_of(DOMAIN) == []
    assert not files.docker_sock.exists() and not files.exec_sock.exists()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: pyd_env.pyd("start", check=False), range(2)))
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    assert sorted("already running" in r.stderr for r in runs) == [False, True]
    assert _domain_state() == libvirt.VIR_DOMAIN_RUNNING
    r = pyd_env.docker("run", "--rm", "-v", "pyd-e2e-vol:/v", "pyd-e2e-busybox", "cat", "/v/token")
    assert r.stdout.strip() == token
    r = pyd_env.docker("run", "--rm", "-v", "pyd-e2e-vol:/v", "pyd-e2e-busybox", "cat", "/v/term")
    assert r.stdout.strip() == "stopped-by-TERM"
    pyd_env.docker("rm", "-f", "pyd-e2e-trap")


def test_start_after_the_vm_was_killed_and_its_ssh_port_taken(pyd_env: PydEnv) -> None:
    conn = libvirt.open("qemu:///system")
    try:
        conn.lookupByName(DOMAIN).destroy()
    finally:
        conn.close()
    assert pyd_env.status()["state"] == "stopped"
    old_port = pyd_env.status()["ssh_port"]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        pyd_env.pyd("start")
    assert pyd_env.status()["ssh_port"] != old_port
    version = pyd_env.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    assert ENGINE_VERSION.fullmatch(version), version


def test_delete_leaves_no_domain_files_or_context(pyd_env: PydEnv) -> None:
    pyd_env.docker("context", "create", "mine", "--docker", "host=unix:///tmp/mine.sock")
    pyd_env.pyd("delete", "-f")
    assert _domain_state() is None
    assert not (pyd_env.home / "instances" / "default").exists()
    contexts = pyd_env.docker("context", "ls", "--format", "{{.Name}}").stdout.split()
    assert "pyd" not in contexts and "mine" in contexts
    r = pyd_env.pyd("status", check=False)
    assert r.returncode == 2 and "no instance" in r.stderr
