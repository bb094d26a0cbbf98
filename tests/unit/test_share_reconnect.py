"""A reconnecting share (issue 18): the guest's attach command, run by a real shell with
stand-ins for sshfs and friends; the host socket that gives each connection its own server;
the ssh command line and which hosts reconnect."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from ast import literal_eval
from collections.abc import Callable
from pathlib import Path
from typing import cast

import paramiko
import pytest

from pyd.errors import PydError
from pyd.host.threads import Deadline
from pyd.mounts.forward_link import ShareSocket
from pyd.mounts.openssh_link import OpenSSHEndpoint
from pyd.mounts.sftp_host import BUILTIN, WALK, SftpServer
from pyd.mounts.shares import Share
from pyd.mounts.sshfs import MOUNTED, NO_CONNECTOR, attach_command, guest_socket
from pyd.mounts.state import MountState
from pyd.mounts.worker import MountManager, MountWorker, reconnects

from .polling import until

MP = "/home/me/a dir"
SSHFS_LINE = "61 24 0:52 / /home/me/a\\040dir {opts},nosuid shared:3 - fuse.sshfs :x {opts}\n"
# Each stand-in logs its name and arguments; `stat` fails when STAT_FAILS is set.
STAND_IN = '#!/bin/sh\necho "$(basename "$0") $*" >> "$LOG"\n'


def _attach(
    tmp_path: Path, mountinfo: str, connector: bool = True, env: dict[str, str] | None = None
) -> tuple[int, str, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("socat", "pkill", "fusermount3", "sshfs", "timeout"):
        (bin_dir / name).write_text(
            STAND_IN + ('[ -z "$STAT_FAILS" ]\n' if name == "timeout" else "")
        )
        (bin_dir / name).chmod(0o755)
    conn = tmp_path / "share-connect"
    if connector:
        conn.write_text("#!/bin/sh\n")
        conn.chmod(0o755)
    info = tmp_path / "mountinfo"
    info.write_text(mountinfo)
    log = tmp_path / "log"
    log.write_text("")
    mp = tmp_path / "mnt"
    cmd = attach_command("/h/a dir", str(mp), True, (), str(conn), str(info))
    done = subprocess.run(
        ["sh", "-c", cmd],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), **(env or {})},
    )
    return done.returncode, done.stdout, log.read_text().splitlines()


def _sshfs_line(mp: Path, opts: str) -> str:
    return SSHFS_LINE.replace("/home/me/a\\040dir", str(mp)).format(opts=opts)


def test_a_live_mount_is_kept_and_its_stale_connectors_killed(tmp_path: Path) -> None:
    code, out, calls = _attach(tmp_path, _sshfs_line(tmp_path / "mnt", "rw"))
    assert (code, out) == (0, MOUNTED + "\n")
    assert not [c for c in calls if c.startswith(("sshfs", "fusermount3"))]
    sock = guest_socket(str(tmp_path / "mnt"))
    assert f"pkill -9 -x -f socat - UNIX-CONNECT:{sock}" in calls


def test_no_mount_a_dead_one_or_a_read_only_one_is_mounted_afresh(tmp_path: Path) -> None:
    mp = tmp_path / "mnt"
    for mountinfo, env in (
        ("", {}),
        (_sshfs_line(mp, "rw"), {"STAT_FAILS": "1"}),  # sshfs gone: ENOTCONN
        (_sshfs_line(mp, "ro"), {}),  # the share became writable
    ):
        code, out, calls = _attach(tmp_path, mountinfo, env=env)
        assert (code, out) == (0, MOUNTED + "\n")
        sshfs = [c for c in calls if c.startswith("sshfs")]
        assert sshfs and sshfs[0].startswith(f"sshfs :/h/a dir {mp} -o ")
        assert "reconnect,ssh_command=" in sshfs[0] and "slave" not in sshfs[0]
        assert f"fusermount3 -u -z {mp}" in calls


def test_an_image_without_the_connector_says_so_by_its_status(tmp_path: Path) -> None:
    code, out, calls = _attach(tmp_path, "", connector=False)
    assert (code, out, calls) == (NO_CONNECTOR, "", [])


def test_the_guest_socket_fits_and_differs_per_mount_point() -> None:
    long = "/" + "d" * 300
    assert len(guest_socket(long)) < 108
    assert guest_socket("/a") != guest_socket("/b")
    assert guest_socket("/a").startswith("/run/pyd/shares/")


def test_the_session_forwards_the_guest_socket_before_the_destination() -> None:
    e = OpenSSHEndpoint("ssh", 2222, Path("/k"), Path("/kh"))
    argv = e.forward_argv("CMD", "/run/pyd/shares/x.sock", "/tmp/d/sftp.sock")
    at = argv.index("-R")
    assert argv[at + 1] == "/run/pyd/shares/x.sock:/tmp/d/sftp.sock"
    assert at < argv.index("root@127.0.0.1") and argv[-1] == "CMD"


def test_only_posix_hosts_with_openssh_reconnect() -> None:
    assert reconnects(True, "linux", {}) and reconnects(True, "darwin", {})
    assert not reconnects(True, "win32", {})
    assert not reconnects(False, "linux", {})
    assert not reconnects(True, "linux", {"PYD_SHARE_RECONNECT": "no"})  # the slave way, asked


def test_each_connection_gets_its_own_server_on_a_private_socket() -> None:
    if sys.platform == "win32":
        pytest.skip("Unix sockets as a server's stdio")
    echo = [sys.executable, "-c", "import sys; l = sys.stdin.readline(); print(l.upper(), end='')"]
    share = ShareSocket(echo)
    share.start()
    try:
        assert stat.S_IMODE(Path(share.path).parent.stat().st_mode) == 0o700
        for word in (b"one\n", b"two\n"):  # a reconnect is a new connection
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(30)
                c.connect(share.path)
                c.sendall(word)
                got = b""
                while not got.endswith(b"\n"):
                    got += c.recv(64)
                assert got == word.upper()
        assert share.connections() == 2
    finally:
        share.close()
        assert share.join(Deadline(30))
    assert not Path(share.path).parent.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_another_user_cannot_connect_to_the_host_socket() -> None:
    """Whoever connects reads and writes the share: another local user is refused."""
    share = ShareSocket([sys.executable, "-c", "print('served')"])
    share.start()
    connect = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])"
    try:
        r = subprocess.run(
            # The system's Python: nobody may not enter the directory of this one.
            [
                shutil.which("python3", path="/usr/bin:/bin") or sys.executable,
                "-c",
                connect,
                share.path,
            ],
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and "PermissionError" in r.stderr, r.stderr
        assert share.connections() == 0
    finally:
        share.close()
        assert share.join(Deadline(30))


class _UpTransport:
    """The agent's connection as a worker sees it: up, but opens no channel."""

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float | None = None) -> paramiko.Channel:
        raise OSError("no channel here")


# Stands in for ssh: logs its argv, then behaves as the guest would (FAKE_SSH_MODE).
FAKE_SSH = """#!{python}
import os, sys
with open({log!r}, "a") as f:
    f.write(repr(sys.argv[1:]) + "\\n")
if "-R" not in sys.argv:
    sys.exit(0)  # a slave sshfs that ended at once
if {mode!r} == "old-image":
    sys.exit({no_connector})
if {mode!r} == "reattaching":
    sys.stdin.read()  # sshfs's reconnect still under way: not mounted until the agent ends it
print("{mounted}", flush=True)
sys.stdin.read()  # the session holds until the agent ends it
"""


def _down(wait: float) -> paramiko.Transport:
    """The agent's connection while its SSH is not up yet: waits, then says so."""
    time.sleep(min(wait, 0.5))
    raise PydError("the SSH connection to the guest is down")


def _worker(
    tmp_path: Path,
    mode: str,
    transport: Callable[[float], paramiko.Transport] | None = None,
    guest_up: bool = False,
) -> tuple[MountWorker, Path, list[MountState]]:
    log = tmp_path / "ssh.log"
    log.write_text("")
    ssh = tmp_path / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable, log=str(log), mode=mode,
                                   no_connector=NO_CONNECTOR, mounted=MOUNTED))  # fmt: skip
    ssh.chmod(0o755)
    states: list[MountState] = []
    endpoint = OpenSSHEndpoint(str(ssh), 2222, tmp_path / "key", tmp_path / "known_hosts")
    worker = MountWorker(
        Share(str(tmp_path), "/mnt/share", True),
        transport or (lambda wait: cast(paramiko.Transport, _UpTransport())),
        SftpServer(BUILTIN, WALK),
        lambda: states.append(worker.state),
        endpoint,
        guest_up,
    )
    return worker, log, states


def test_a_guest_known_up_gets_its_share_session_before_the_agents_ssh(tmp_path: Path) -> None:
    """After a restore the share's own session connects alongside the agent's, which it
    does not need; before (a booting guest) it waits for the agent's SSH."""
    if sys.platform == "win32":
        pytest.skip("Windows shares do not reconnect")
    early, log, _ = _worker(tmp_path, "new-image", _down, guest_up=True)
    early.start()
    try:
        until(lambda: early.state == MountState.MOUNTED, 5, what="mounted without the agent's SSH")
    finally:
        early.close()
        assert early.join(Deadline(30))
    booting, log, _ = _worker(tmp_path, "new-image", _down, guest_up=False)
    booting.start()
    try:
        time.sleep(1.5)
        assert log.read_text() == "" and booting.state == MountState.MOUNTING
    finally:
        booting.close()
        assert booting.join(Deadline(30))


def test_a_resumed_guests_kept_mount_is_neither_waited_for_nor_reported_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After a resume the guest's sshfs still has the mount, and an access waits until the
    share's session is back: the agent's ready does not wait for it (MountManager.kept), and
    a container using it is not told it sees an empty directory. A booting guest's share, or
    one whose image cannot reconnect, is neither."""
    if sys.platform == "win32":
        pytest.skip("Windows shares do not reconnect")
    resumed, _, _ = _worker(tmp_path, "reattaching", _down, guest_up=True)
    booting, _, _ = _worker(tmp_path, "reattaching", _down, guest_up=False)
    assert resumed.kept and not booting.kept
    old, _, _ = _worker(tmp_path, "old-image", _down, guest_up=True)
    old.start()
    try:
        until(lambda: not old.kept, 5, what="an image without the connector: not kept")
    finally:
        old.close()
        assert old.join(Deadline(30))

    ssh = tmp_path / "ssh"  # _worker's, in "reattaching" mode
    endpoint = OpenSSHEndpoint(str(ssh), 2222, tmp_path / "key", tmp_path / "known_hosts")
    share = Share(str(tmp_path), "/mnt/share", True)
    container = {"Names": ["/web"], "Mounts": [{"Type": "bind", "Source": "/mnt/share/src"}]}
    for guest_up, warned in ((True, False), (False, True)):
        manager = MountManager(_down, SftpServer(BUILTIN, WALK), lambda r: None, endpoint, guest_up)
        manager.set_shares([share])
        caplog.clear()
        try:
            assert manager.kept() == ({"/mnt/share"} if guest_up else set())
            with caplog.at_level(logging.ERROR, "pyd.agent"):
                manager.check_containers([container])
            assert ("sees an empty directory" in caplog.text) == warned, caplog.text
        finally:
            manager.close()
            assert manager.join(Deadline(30))


def test_a_reconnecting_share_is_mounted_through_its_forwarded_socket(tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("Windows shares do not reconnect")
    worker, log, _ = _worker(tmp_path, "new-image")
    worker.start()
    try:
        until(lambda: worker.state == MountState.MOUNTED, what="mounted")
        argv = literal_eval(log.read_text().splitlines()[0])
        forward = argv[argv.index("-R") + 1]
        guest, host = forward.split(":", 1)
        assert guest == guest_socket("/mnt/share") and Path(host).is_socket()
        assert "reconnect,ssh_command=" in argv[-1]
    finally:
        worker.close()
        assert worker.join(Deadline(30))
    assert not Path(host).parent.exists()  # the host socket goes with the worker


def test_a_guest_image_without_the_connector_is_mounted_the_slave_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if sys.platform == "win32":
        pytest.skip("Windows shares do not reconnect")
    worker, log, _ = _worker(tmp_path, "old-image")
    with caplog.at_level(logging.WARNING, "pyd.agent"):
        worker.start()
        try:
            until(lambda: len(log.read_text().splitlines()) >= 2, what="a second session")
        finally:
            worker.close()
            assert worker.join(Deadline(30))
    first, second = (literal_eval(line) for line in log.read_text().splitlines()[:2])
    assert "-R" in first
    assert "-R" not in second and "-o slave," in second[-1]
    assert "no share connector" in caplog.text
