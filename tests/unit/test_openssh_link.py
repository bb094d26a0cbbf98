"""A share's OpenSSH session: the ssh command line, and the two processes piped to each other
(a real server process on one end, the built-in one and the confined system sftp-server; on
the other, a stand-in for `ssh … sshfs` that speaks the first SFTP exchange itself)."""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest

from pyd.host.threads import Deadline
from pyd.mounts.openssh_link import ENV, OpenSSHEndpoint, OpenSSHLink, find_endpoint
from pyd.mounts.sftp_host import BUILTIN, OPENSSH, SftpServer, choose_server

from .polling import until

ENDPOINT = OpenSSHEndpoint("/usr/bin/ssh", 2222, Path("/k/id"), Path("/k/known_hosts"))


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_argv_pins_the_guest_key_and_ignores_the_users_ssh_config() -> None:
    argv = ENDPOINT.argv("exec sshfs :/a /a -o slave")
    assert argv[0] == "/usr/bin/ssh"
    assert _option(argv, "-F") == "none"
    assert _option(argv, "-p") == "2222"
    assert _option(argv, "-i") == "/k/id"
    options = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {
        "UserKnownHostsFile=/k/known_hosts",
        "StrictHostKeyChecking=yes",
        "PasswordAuthentication=no",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
    } <= options
    # No terminal, no agent or X11 forwarding; the command is one word, last, after the host.
    assert {"-T", "-a", "-x"} <= set(argv)
    assert argv[-2:] == ["root@127.0.0.1", "exec sshfs :/a /a -o slave"]


@pytest.mark.parametrize(
    ("system", "env", "ssh"),
    [
        ("linux", {"PATH": "/usr/bin:/opt/bin"}, "/opt/bin/ssh"),
        ("darwin", {"PATH": "/opt/bin"}, "/opt/bin/ssh"),
        # Windows' OpenSSH folder off PATH: where `pyd doctor` finds it too (host.programs).
        ("win32", {"PATH": r"C:\Tools"}, r"C:\Windows\System32\OpenSSH\ssh.exe"),
    ],
)
def test_endpoint_only_with_an_ssh_client_and_not_when_told_to_use_the_agent(
    system: str, env: dict[str, str], ssh: str
) -> None:
    kind = PureWindowsPath if system == "win32" else PurePosixPath
    there = {kind(ssh)}.__contains__
    found = find_endpoint(2222, Path("/k/id"), Path("/k/kh"), env, system, there)
    assert found == OpenSSHEndpoint(ssh, 2222, Path("/k/id"), Path("/k/kh"))
    told = {**env, ENV: "agent"}
    assert find_endpoint(2222, Path("/k/id"), Path("/k/kh"), told, system, there) is None
    nothing = set().__contains__
    assert find_endpoint(2222, Path("/k/id"), Path("/k/kh"), env, system, nothing) is None


# Plays sshfs's part over its stdin/stdout: SSH_FXP_INIT, then the server's SSH_FXP_VERSION
# is written to stderr (where ssh passes sshfs's messages), and the exit status is 3.
_CLIENT = r"""
import os, struct, sys
os.write(1, struct.pack(">IBI", 5, 1, 3))
head = os.read(0, 9)
length, kind, version = struct.unpack(">IBI", head)
sys.stderr.write(f"reply type {kind} version {version}\n")
sys.exit(3)
"""


SHARE = str(Path(__file__).parent)


@functools.cache
def _servers() -> list[SftpServer]:
    """Every server that ships on this host: the built-in one, and OpenSSH's confined."""
    system = choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH})
    if system.builtin:
        pytest.fail(f"no confined OpenSSH sftp-server here: {system.note}")
    return [choose_server(sys.platform, {"PYD_SFTP_SERVER": BUILTIN}), system]


def server_argv(server: SftpServer, writable: bool) -> list[str]:
    return server.argv(SHARE, writable)


@pytest.fixture(params=["builtin", "openssh"])
def server(request: pytest.FixtureRequest) -> SftpServer:
    return _servers()[1 if request.param == "openssh" else 0]


def _sftp_server() -> SftpServer:
    return _servers()[0]


def _started(ssh: list[str], server: list[str]) -> OpenSSHLink:
    link = OpenSSHLink(ssh, server)
    link.start()
    return link


def test_link_pipes_ssh_and_the_sftp_server_to_each_other(server: SftpServer) -> None:
    link = _started([sys.executable, "-c", _CLIENT], server_argv(server, True))
    try:
        assert link.wait() == 3
        # The real sftp-server answered the stand-in's INIT through the pipes alone.
        assert link.ended() == "ssh exited with status 3: reply type 2 version 3"
        assert not link.running()
        # ssh's end closed the server's input: it ends by itself, before any close.
        assert link.join(Deadline(10))
    finally:
        link.close()
    assert link.server.poll() is not None


def test_close_asks_both_processes_to_end_and_join_reaps_them() -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    link = _started(sleeper, server_argv(_sftp_server(), False))
    assert link.running()
    assert link.ended() == "ssh is running"
    t0 = time.monotonic()
    link.close()
    assert time.monotonic() - t0 < 1  # close never waits
    assert link.join(Deadline(5))
    assert link.ssh.poll() is not None
    assert link.server.poll() is not None


def test_join_kills_what_ignores_the_close() -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "sys.stderr.write('ready'); sys.stderr.flush(); time.sleep(60)",
    ]
    link = _started(stubborn, server_argv(_sftp_server(), True))
    until(lambda: link.ended().endswith("ready"), what="the stand-in ignores SIGTERM")
    link.close()
    t0 = time.monotonic()
    assert not link.join(Deadline(0.5))
    assert time.monotonic() - t0 < 5
    assert link.ssh.returncode == -signal.SIGKILL


def test_a_missing_ssh_program_leaves_no_server_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real(*args, **kwargs)
        started.append(proc)
        return proc

    argv = server_argv(_sftp_server(), True)
    monkeypatch.setattr(subprocess, "Popen", recording)
    link = OpenSSHLink([str(tmp_path / "no-ssh")], argv)
    with pytest.raises(OSError):
        link.start()
    assert len(started) == 1  # the server; ssh never started
    assert started[0].poll() is not None


def test_stderr_keeps_only_its_end() -> None:
    noisy = [sys.executable, "-c", "import sys; sys.stderr.write('x' * 10000 + ' last words')"]
    link = _started(noisy, server_argv(_sftp_server(), True))
    try:
        link.wait()
        assert link.ended().endswith("x last words")
        assert len(link.ended()) < 400
    finally:
        link.close()
        link.join(Deadline(5))
