"""A share on the agent's own SSH connection (no `ssh` here, or PYD_SHARE_SSH=agent), with each
server: the agent's MountManager opens an exec channel on a real paramiko connection to a
stand-in guest whose sshd runs the commands with this machine's shell, so the real sshfs
mounts the share here as it would in the guest. Then the issue 13 finding is tried on the
mount: the host file outside the share must not change."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import paramiko
import pytest

from pyd.host.threads import Deadline
from pyd.mounts.sftp_host import BUILTIN, OPENSSH, SftpServer, choose_server
from pyd.mounts.shares import Share
from pyd.mounts.state import MountState, MountStatus
from pyd.mounts.worker import MountManager

from .polling import until
from .sshserver import AllowAnyone, SSHServer, client_without_auth

pytestmark = pytest.mark.skipif(
    not (
        sys.platform == "linux"
        and shutil.which("sshfs")
        and shutil.which("fusermount3")
        and os.access("/dev/fuse", os.W_OK)
    ),
    reason="needs Linux, sshfs and FUSE on this machine",
)


class _ShellGuest(AllowAnyone):
    """The guest's sshd: runs each exec request with `sh -c` on this machine."""

    def __init__(self) -> None:
        self.commands: dict[int, bytes] = {}
        self.arrived = threading.Condition()

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return int(
            paramiko.OPEN_SUCCEEDED
            if kind == "session"
            else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        with self.arrived:
            self.commands[channel.get_id()] = command
            self.arrived.notify_all()
        return True

    def run(self, chan: paramiko.Channel) -> None:
        with self.arrived:
            self.arrived.wait_for(lambda: chan.get_id() in self.commands, timeout=10)
        command = self.commands.get(chan.get_id())
        if command is None:
            chan.close()
            return
        proc = subprocess.Popen(
            ["sh", "-c", command.decode()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        def to_process() -> None:
            try:
                for data in iter(lambda: chan.recv(65536), b""):
                    stdin.write(data)
            except OSError:
                pass
            finally:
                stdin.close()

        pump = threading.Thread(target=to_process, daemon=True)
        pump.start()
        for data in iter(lambda: stdout.read(65536), b""):
            chan.sendall(data)
        chan.send_exit_status(proc.wait())
        chan.close()


def _servers() -> dict[str, SftpServer]:
    return {
        "builtin": choose_server(sys.platform, {"PYD_SFTP_SERVER": BUILTIN}),
        "openssh": choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH}),
    }


@pytest.mark.parametrize("name", ["builtin", "openssh"])
def test_a_share_on_the_agents_connection_mounts_and_stays_confined(
    name: str, tmp_path: Path
) -> None:
    server = _servers()[name]
    assert server.builtin == (name == "builtin"), server.note
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello").write_text("from the host\n")
    secret = tmp_path / "outside.txt"
    secret.write_text("host only\n")
    os.utime(secret, (1_600_000_000, 1_600_000_000))
    mnt = tmp_path / "mnt"

    a, b = socket.socketpair()
    guest = _ShellGuest()
    ssh = SSHServer(paramiko.Transport(b), guest, guest.run)
    transport = client_without_auth(a, ssh)
    reports: list[tuple[MountStatus, ...]] = []
    manager = MountManager(lambda wait: transport, server, reports.append, openssh=None)
    try:
        manager.set_shares([Share(str(share), str(mnt), True)])
        until(
            lambda: reports and reports[-1] and reports[-1][0].state == MountState.MOUNTED,
            30,
            0.05,
            "the share mounted",
        )
        assert (mnt / "hello").read_text() == "from the host\n"
        (mnt / "back").write_text("from the guest\n")
        assert (share / "back").read_text() == "from the guest\n"
        # The finding: a link to the outside file, then chown -h and touch -h on it.
        os.symlink(str(secret), mnt / "evil")
        assert os.readlink(share / "evil") == str(secret)
        with pytest.raises(OSError):
            os.chown(mnt / "evil", 1234, 1234, follow_symlinks=False)
        with pytest.raises(OSError):
            os.utime(mnt / "evil", (946_598_400, 946_598_400), follow_symlinks=False)
        st = secret.stat()
        assert (st.st_uid, st.st_mtime) == (0, 1_600_000_000)
        assert secret.read_text() == "host only\n"
        # Removed from the config: its worker stops and the mount goes.
        manager.set_shares([])
        assert reports[-1] == ()
        assert not os.path.ismount(mnt)
    finally:
        manager.close()
        manager.join(Deadline(10))
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False, capture_output=True)
        transport.close()
        ssh.close()
