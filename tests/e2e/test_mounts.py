"""Host directories in the guest at the same path, over the agent's SSH connection (reverse
SSHFS; QEMU under TCG, the host's docker CLI). One instance for the module under each
backend (libvirt, and direct QEMU started the Windows way: backend_param.py):
first with the system's OpenSSH sftp-server confined to each share in a mount namespace (the
default on Linux), then restarted with pyd's built-in SFTP server (PYD_SFTP_SERVER=builtin).
With each, containers try to reach a host file outside every share through links they
make."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pyd.image.cache import CachedImage
from tests.e2e.backend_param import BACKENDS, SwitchedEnv, backend_env, qmp
from tests.e2e.pydcli import PydEnv, build_busybox_image, cut_agent_ssh

NAME = "mounts"
IMAGE = "pyd-e2e-mounts-busybox"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def shares(backend: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh directories for each backend's run (the tests leave files in them)."""
    root = tmp_path_factory.mktemp("shares")
    made = {"rw": root / "rw dir é", "ro": root / "ro", "late": root / "late"}
    for p in made.values():
        p.mkdir()
    made["outside"] = root / "outside.txt"  # in no share (nor in the shared home directory)
    return made


@pytest.fixture(scope="module")
def env(
    backend: str,
    image: CachedImage,
    tmp_path_factory: pytest.TempPathFactory,
    shares: dict[str, Path],
) -> Iterator[PydEnv]:
    # The same name under both backends: each has its own PYD_HOME, and direct QEMU makes
    # no libvirt domain.
    pyd_home = tmp_path_factory.mktemp("pyd-home")
    e = backend_env(backend, pyd_home, tmp_path_factory.mktemp("docker-config"), NAME)
    try:
        e.pyd("start", "-n", NAME)
        # Shares are mounted before `pyd start` returns: the default one, the home directory.
        home = {m["location"]: m["state"] for m in e.status(NAME)["mounts"]}
        assert home == {str(Path.home()): "mounted"}
        e.pyd("mount", "add", str(shares["rw"]), "-n", NAME)
        e.pyd("mount", "add", "--ro", str(shares["ro"]), "-n", NAME)
        build_busybox_image(e, tmp_path_factory.mktemp("bb"), IMAGE)
        for share in ("rw", "ro"):
            _wait_state(e, shares[share], "mounted")
        yield e
    finally:
        e.pyd("delete", "-f", "-n", NAME, check=False)


def _mounts(env: PydEnv) -> dict[str, dict[str, Any]]:
    rows = json.loads(env.pyd("mount", "ls", "-n", NAME, "--json").stdout)
    return {r["location"]: r for r in rows}


def _wait_state(env: PydEnv, location: Path, state: str, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while True:
        row = _mounts(env).get(str(location))
        if row is not None and row["state"] == state:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{location} not {state} after {seconds} s: {row}")
        time.sleep(0.2)


def _run(env: PydEnv, *args: str, check: bool = True) -> str:
    return env.docker("run", "--rm", *args, check=check).stdout


def test_shares_added_to_the_running_instance_are_mounted(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    rows = _mounts(env)
    assert rows[str(shares["rw"])]["state"] == "mounted"
    assert rows[str(shares["ro"])]["state"] == "mounted"
    assert rows[str(shares["ro"])]["writable"] is False
    status = env.status(NAME)
    assert {m["location"] for m in status["mounts"]} >= {str(shares["rw"]), str(shares["ro"])}


def test_container_writes_and_host_reads_at_the_same_path(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    d = shares["rw"] / "x"
    d.mkdir()
    _run(env, "-v", f"{d}:/data", IMAGE, "sh", "-c",
         "echo from-container > '/data/a file ü.txt' && chmod 0750 '/data/a file ü.txt' && "
         "touch -d @1612325106 '/data/a file ü.txt'")  # fmt: skip
    written = d / "a file ü.txt"
    assert written.read_text() == "from-container\n"
    st = written.stat()
    assert st.st_mode & 0o777 == 0o750
    assert int(st.st_mtime) == 1612325106


def test_host_writes_and_container_reads(env: PydEnv, shares: dict[str, Path]) -> None:
    d = shares["rw"] / "y"
    d.mkdir()
    (d / "naïve name.txt").write_text("from-host\n")
    os.utime(d / "naïve name.txt", (1_600_000_000, 1_600_000_000))
    f = "'/data/naïve name.txt'"
    script = f"cd /data && echo * && cat {f} && stat -c %Y {f}"  # busybox ls hides non-ASCII
    out = _run(env, "-v", f"{d}:/data", IMAGE, "sh", "-c", script)
    assert out.split("\n")[:3] == ["naïve name.txt", "from-host", "1600000000"]


def test_symlinks_inside_a_share_work_in_the_guest(env: PydEnv, shares: dict[str, Path]) -> None:
    d = shares["rw"] / "links"
    (d / "pkg" / "bin").mkdir(parents=True)
    (d / "pkg" / "bin" / "tool").write_text("tool\n")
    (d / ".bin").mkdir()
    (d / ".bin" / "tool").symlink_to("../pkg/bin/tool")  # as node_modules/.bin does
    (d / "abs").symlink_to(d / "pkg")  # absolute, valid in the guest: same path
    q = shlex.quote(str(d))
    out = _run(env, "-v", f"{d}:{d}", IMAGE, "sh", "-c", f"cat {q}/.bin/tool {q}/abs/bin/tool")
    assert out == "tool\ntool\n"
    # A link to a path of the container, as a venv's bin/python: made and followed there.
    out = _run(env, "-v", f"{d}:/s", IMAGE, "sh", "-c", "ln -s /bin/busybox /s/echo && /s/echo ok")
    assert out == "ok\n"
    assert os.readlink(d / "echo") == "/bin/busybox"


def test_large_write_from_a_container_matches_on_the_host(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    d = shares["rw"] / "big"
    d.mkdir()
    out = _run(env, "-v", f"{d}:/data", IMAGE, "sh", "-c",
               "head -c 20971520 /dev/urandom | tee /data/blob | sha256sum")  # fmt: skip
    assert hashlib.sha256((d / "blob").read_bytes()).hexdigest() == out.split()[0]


def test_a_read_only_share_refuses_writes(env: PydEnv, shares: dict[str, Path]) -> None:
    (shares["ro"] / "keep.txt").write_text("original\n")
    r = env.docker("run", "--rm", "-v", f"{shares['ro']}:/data", IMAGE, "sh", "-c",
                   "cat /data/keep.txt; echo changed > /data/keep.txt || exit 7; "
                   "touch /data/new.txt || exit 8", check=False)  # fmt: skip
    assert r.returncode == 7, r.stderr
    assert r.stdout == "original\n"
    assert "Read-only file system" in r.stderr
    assert (shares["ro"] / "keep.txt").read_text() == "original\n"
    assert not (shares["ro"] / "new.txt").exists()


def _sshfs_pid(env: PydEnv, mount_point: Path) -> str:
    """The guest's sshfs process serving `mount_point` (empty when there is none)."""
    pattern = shlex.quote(f"[s]shfs :{mount_point} ")
    return env.pyd("ssh", "-n", NAME, "--", f"pgrep -f {pattern} || true").stdout.strip()


def _until_a_container_reads(env: PydEnv, share: Path, name: str, seconds: float = 60) -> str:
    end = time.monotonic() + seconds
    while True:
        r = env.docker("run", "--rm", "-v", f"{share}:/data", IMAGE,
                       "cat", f"/data/{name}", check=False)  # fmt: skip
        if r.returncode == 0 and _mounts(env)[str(share)]["state"] == "mounted":
            return r.stdout
        assert time.monotonic() < end, f"not back after {seconds} s: {r.stderr} {_mounts(env)}"
        time.sleep(1)


def test_the_mount_comes_back_after_the_ssh_connection_is_cut(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    before = _sshfs_pid(env, shares["rw"])
    assert before.isdigit()
    cut_agent_ssh(env, NAME)
    (shares["rw"] / "after-cut.txt").write_text("still here\n")
    assert _until_a_container_reads(env, shares["rw"], "after-cut.txt") == "still here\n"
    # The same sshfs: it connected again through the new session, so the mount, and any
    # running container's bind of it, lived through the cut (issue 18).
    assert _sshfs_pid(env, shares["rw"]) == before


def _pause_and_resume(env: PydEnv, during: Callable[[], None]) -> None:
    """Pauses the VM (libvirt's suspend; QMP `stop` for direct QEMU), runs `during`, resumes."""
    if isinstance(env, SwitchedEnv):
        qmp(env, NAME, "stop")
        try:
            during()
        finally:
            qmp(env, NAME, "cont")
        return
    import libvirt

    conn = libvirt.open("qemu:///system")
    try:
        domain = conn.lookupByName(f"pyd-{NAME}")
        domain.suspend()
        try:
            during()
        finally:
            domain.resume()
    finally:
        conn.close()


def test_shares_work_after_the_vm_is_paused_and_resumed(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    def during() -> None:
        # Longer than the agent's keepalive interval, as a laptop's short sleep is.
        time.sleep(20)
        (shares["rw"] / "during-pause.txt").write_text("written while paused\n")

    _pause_and_resume(env, during)
    got = _until_a_container_reads(env, shares["rw"], "during-pause.txt")
    assert got == "written while paused\n"
    assert {m["state"] for m in _mounts(env).values()} == {"mounted"}


def test_mount_add_ls_rm_on_the_running_instance(env: PydEnv, shares: dict[str, Path]) -> None:
    late = shares["late"]
    (late / "hello").write_text("late\n")
    env.pyd("mount", "add", str(late), "-n", NAME)
    _wait_state(env, late, "mounted")
    assert _run(env, "-v", f"{late}:/data", IMAGE, "cat", "/data/hello") == "late\n"
    env.pyd("mount", "rm", str(late), "-n", NAME)
    end = time.monotonic() + 30
    while str(late) in _mounts(env):
        assert time.monotonic() < end, "still listed after rm"
        time.sleep(0.2)
    mounted = env.pyd("ssh", "-n", NAME, "--", "grep -c fuse.sshfs /proc/self/mountinfo",
                      check=False).stdout  # fmt: skip
    end = time.monotonic() + 30
    while int(mounted.strip() or 0) != 3:  # home and the two the module added
        assert time.monotonic() < end, f"{mounted.strip()} sshfs mounts left"
        time.sleep(0.5)
        mounted = env.pyd("ssh", "-n", NAME, "--", "grep -c fuse.sshfs /proc/self/mountinfo",
                          check=False).stdout  # fmt: skip


# The issue 13 finding: `ln -s OUTSIDE /s/evil; chown -h …; touch -h …` changed the host file,
# because sshfs sends SETSTAT by path and a path-based server follows the link. The same with a
# relative link, and with a hard link to the symlink. Each line prints ESCAPED if the host
# file's owner or time changed (the container cannot see it, so the test checks the host).
ESCAPES = (
    "ln -s {outside} /s/abs-{tag}; chown -h 1234:1234 /s/abs-{tag}; "
    "touch -h -d 1999-12-31 /s/abs-{tag}; chown 1234:1234 /s/abs-{tag}; "
    "touch -d 1999-12-31 /s/abs-{tag}",
    "ln -s ../../outside.txt /s/rel-{tag}; chown -h 1234:1234 /s/rel-{tag}; "
    "touch -h -d 1999-12-31 /s/rel-{tag}",
    "ln /s/abs-{tag} /s/hard-{tag}; chown -h 1234:1234 /s/hard-{tag}; "
    "touch -h -d 1999-12-31 /s/hard-{tag}",
)


def _try_escapes(env: PydEnv, shares: dict[str, Path], tag: str) -> None:
    outside = shares["outside"]
    outside.write_text("host only\n")
    os.chmod(outside, 0o644)
    os.utime(outside, (1_700_000_000, 1_700_000_000))
    before = outside.stat()
    d = shares["rw"] / f"escape-{tag}"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)  # the unprivileged container user may make links here
    for user in ("1000:1000", "0:0"):
        who = user.split(":")[0]
        for n, line in enumerate(ESCAPES):
            script = line.format(outside=shlex.quote(str(outside)), tag=f"{who}-{n}")
            env.docker("run", "--rm", "--user", user, "-v", f"{d}:/s", IMAGE, "sh", "-c",
                       script, check=False)  # fmt: skip
            after = outside.stat()
            changed = (after.st_uid, after.st_gid, after.st_mtime_ns) != (
                before.st_uid, before.st_gid, before.st_mtime_ns)  # fmt: skip
            assert not changed, f"{tag} server, --user {user}: `{script}` changed the host file"
    assert outside.read_text() == "host only\n"
    # The links were made (a link's text is data); no server followed them out.
    made = [os.path.islink(d / name) for name in ("abs-0-0", "rel-1000-1", "abs-1000-0")]
    assert made == [True] * 3


def test_links_made_by_a_container_reach_nothing_outside_the_share(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    log = (env.home / "instances" / NAME / "agent.log").read_text()
    assert "sftp-server confined by a mount namespace" in log  # the default here
    _try_escapes(env, shares, "openssh")


def test_a_container_user_gets_the_host_modes_when_pyd_runs_as_root(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    """pyd runs as root here: without the guest kernel checking modes, every container user
    would act as the host's root in a share (the finding: `--user 1000` read a 0600 root
    file). A container's root keeps root's rights; README, "Shared directories"."""
    assert os.geteuid() == 0
    d = shares["rw"] / "modes"
    d.mkdir()
    (d / "private").write_text("root only\n")
    os.chmod(d / "private", 0o600)
    (d / "public").write_text("everyone\n")
    os.chmod(d / "public", 0o644)
    (d / "open").mkdir(mode=0o777)
    os.chmod(d / "open", 0o777)
    as_user = ("run", "--rm", "--user", "1000:1000", "-v", f"{d}:/s", IMAGE, "sh", "-c")
    r = env.docker(*as_user, "cat /s/private", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = env.docker(*as_user, "echo x > /s/new", check=False)
    assert r.returncode != 0 and not (d / "new").exists()
    out = env.docker(*as_user, "cat /s/public && echo mine > /s/open/mine && cat /s/open/mine")
    assert out.stdout == "everyone\nmine\n"
    assert (d / "open" / "mine").stat().st_uid == 0  # the host file is the pyd user's
    assert _run(env, "-v", f"{d}:/s", IMAGE, "cat", "/s/private") == "root only\n"


def test_the_built_in_sftp_server_serves_the_same_shares(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    env.pyd("stop", "-n", NAME)
    env.pyd("start", "-n", NAME, PYD_SFTP_SERVER="builtin")
    log = (env.home / "instances" / NAME / "agent.log").read_text()
    since = log.rsplit("ready:", 1)[0].rsplit("ssh done", 1)[-1]
    assert "pyd's built-in SFTP server" in since
    d = shares["rw"] / "builtin"
    d.mkdir()
    (d / "in.txt").write_text("host\n")
    out = _run(env, "-v", f"{d}:/data", IMAGE, "sh", "-c",
               "cat /data/in.txt && echo guest > /data/out.txt")  # fmt: skip
    assert out == "host\n"
    assert (d / "out.txt").read_text() == "guest\n"
    r = env.docker("run", "--rm", "-v", f"{shares['ro']}:/data", IMAGE,
                   "touch", "/data/nope", check=False)  # fmt: skip
    assert r.returncode != 0 and not (shares["ro"] / "nope").exists()


def test_links_reach_nothing_outside_the_share_with_the_built_in_server(
    env: PydEnv, shares: dict[str, Path]
) -> None:
    _try_escapes(env, shares, "builtin")
