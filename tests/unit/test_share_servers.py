"""Which SFTP server answers a share, and how each is confined: the choice PYD_SFTP_SERVER
makes on each platform, the built-in server's process entry, what a confined OpenSSH
sftp-server can see on Linux, the macOS sandbox profile (pure text: sandbox-exec cannot run
here), and who may do what in a share (the sshfs options)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pyd.mounts import sandbox_macos
from pyd.mounts.sftp_host import (
    BUILTIN,
    NAMESPACE,
    OPENSSH,
    SANDBOX,
    WALK,
    SftpServer,
    choose_server,
)
from pyd.mounts.sftp_serve import PipeStream, parse_args
from pyd.mounts.sshfs import access_options, mount_command

from .test_share_escapes import process_client

SYSTEM = {
    "linux": "/usr/lib/openssh/sftp-server",
    "darwin": "/usr/libexec/sftp-server",
    "win32": r"C:\Windows\System32\OpenSSH\sftp-server.exe",
}


def _choose(platform: str, wanted: str, confinable: bool = True) -> SftpServer:
    env = {"PYD_SFTP_SERVER": wanted} if wanted else {}
    return choose_server(
        platform, env, exists=lambda p: p == SYSTEM.get(platform), can_confine=lambda _: confinable
    )


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_the_default_is_openssh_confined_on_linux_and_the_built_in_server_elsewhere(
    platform: str,
) -> None:
    for wanted in ("builtin", " builtin "):
        assert _choose(platform, wanted) == SftpServer(BUILTIN, WALK)
    if platform == "linux":
        assert _choose(platform, "") == SftpServer(SYSTEM["linux"], NAMESPACE)
        # Without a namespace: the built-in server, and the log says why (not naming the
        # variable nobody set).
        fallback = _choose(platform, "", confinable=False)
        assert fallback.builtin and fallback.note.startswith(SYSTEM["linux"])
    else:
        assert _choose(platform, "") == SftpServer(BUILTIN, WALK)


def test_openssh_runs_only_where_the_os_confines_it() -> None:
    assert _choose("linux", "openssh") == SftpServer(SYSTEM["linux"], NAMESPACE)
    assert _choose("darwin", "openssh") == SftpServer(SYSTEM["darwin"], SANDBOX)
    assert _choose("linux", "/opt/sftp-server") == SftpServer("/opt/sftp-server", NAMESPACE)
    # Never on Windows, nor on a Linux that cannot make the namespace: the built-in server,
    # with a note the agent logs.
    for platform, confinable in (("win32", True), ("linux", False), ("darwin", False)):
        got = _choose(platform, "openssh", confinable)
        assert got.builtin and got.confinement == WALK
        assert "cannot be confined to a share on this host" in got.note
    missing = choose_server("linux", {"PYD_SFTP_SERVER": OPENSSH}, exists=lambda p: False)
    assert missing.builtin and "no OpenSSH sftp-server here" in missing.note


def test_each_server_is_a_command_on_stdin_and_stdout() -> None:
    share = "/home/me/src"
    assert SftpServer(BUILTIN, WALK).argv(share, False) == [
        sys.executable, "-m", "pyd.mounts.sftp_serve", share, "--read-only"]  # fmt: skip
    assert SftpServer(SYSTEM["linux"], NAMESPACE).argv(share, True) == [
        sys.executable, "-m", "pyd.mounts.confine_linux", share, "--",
        SYSTEM["linux"], "-e"]  # fmt: skip
    mac = SftpServer(SYSTEM["darwin"], SANDBOX).argv(share, False)
    assert mac[:2] == [sandbox_macos.SANDBOX_EXEC, "-p"]
    assert mac[3:] == [SYSTEM["darwin"], "-e", "-R"]
    with pytest.raises(ValueError):
        SftpServer(SYSTEM["linux"], "none").argv(share, True)  # never unconfined


def test_sftp_serve_arguments() -> None:
    assert parse_args(["/s"]) == ("/s", True)
    assert parse_args(["--read-only", "/s"]) == ("/s", False)
    for bad in ([], ["/a", "/b"], ["--verbose"]):
        with pytest.raises(ValueError):
            parse_args(bad)
    done = subprocess.run([sys.executable, "-m", "pyd.mounts.sftp_serve"], capture_output=True)
    assert done.returncode == 2 and b"usage" in done.stderr


def test_sftp_serve_reports_a_missing_share_and_exits_1(tmp_path: Path) -> None:
    argv = SftpServer(BUILTIN, WALK).argv(str(tmp_path / "gone"), True)
    done = subprocess.run(argv, capture_output=True, input=b"", timeout=30)
    assert done.returncode == 1
    assert b"cannot share" in done.stderr and done.stdout == b""


def test_pipe_stream_serves_exact_reads_from_one_large_read() -> None:
    r, w = os.pipe()
    os.write(w, b"0123456789")
    stream = PipeStream(r, w)
    assert [stream.recv(4), stream.recv(4), stream.recv(4)] == [b"0123", b"4567", b"89"]
    assert stream.send(b"abc") == 3
    assert stream.recv(10) == b"abc"
    stream.close()


@pytest.mark.skipif(sys.platform != "linux", reason="Linux mount namespaces")
def test_the_confined_openssh_server_sees_only_the_share(tmp_path: Path) -> None:
    """The namespace's root holds the share at its own path, /dev/null and pyd's own /etc;
    the host's /usr, /etc, /root, the share's neighbours are not there."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "f").write_bytes(b"in")
    (tmp_path / "neighbour").write_bytes(b"out")
    server = choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH})
    assert server.confinement == NAMESPACE, server.note
    with process_client(server.argv(str(share), True)) as c:
        assert sorted(c.listdir("/")) == sorted({"dev", "etc", str(share).split("/")[1]})
        assert c.listdir(str(tmp_path)) == ["share"]
        assert c.listdir("/dev") == ["null"]
        assert sorted(c.listdir("/etc")) == ["group", "nsswitch.conf", "passwd"]
        with c.open("/etc/passwd") as f:
            assert f.read().count(b"\n") == 1  # pyd's line for this user, not the host's file
        for gone in ("/usr", "/root", "/proc", "/lib", str(tmp_path / "neighbour")):
            with pytest.raises(FileNotFoundError):
                c.stat(gone)
        with c.open(f"{share}/f") as f:
            assert f.read() == b"in"
        with pytest.raises(OSError):  # the root is read-only: nothing lands outside the share
            c.open("/etc/new", "w").close()


@pytest.mark.skipif(sys.platform != "linux", reason="Linux mount namespaces")
def test_a_read_only_share_is_read_only_in_the_namespace_too(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    # No -R: the bind mount itself refuses the write.
    argv = [sys.executable, "-m", "pyd.mounts.confine_linux", str(share), "--read-only", "--",
            choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH}).program, "-e"]  # fmt: skip
    with process_client(argv) as c, pytest.raises(OSError):
        c.open(f"{share}/new", "w").close()
    assert os.listdir(share) == []


def test_confine_linux_usage() -> None:
    if sys.platform != "linux":
        pytest.skip("Linux only")
    done = subprocess.run([sys.executable, "-m", "pyd.mounts.confine_linux", "/x"],
                          capture_output=True)  # fmt: skip
    assert done.returncode == 2 and b"usage" in done.stderr


# -- macOS: the sandbox profile -------------------------------------------------------------


def test_the_sandbox_profile_allows_files_only_beneath_the_share() -> None:
    profile = sandbox_macos.sandbox_profile(
        ["/Users/me/src", "/Users/me/src"], True, "/usr/libexec/sftp-server"
    )
    lines = profile.splitlines()
    assert lines[:2] == ["(version 1)", "(deny default)"]
    assert '(allow file-read* (subpath "/Users/me/src"))' in lines
    assert '(allow file-write* (subpath "/Users/me/src"))' in lines
    assert '(allow process-exec (literal "/usr/libexec/sftp-server"))' in lines
    # Above the share: metadata of the ancestors only (sftp-server's realpath), nothing else.
    assert '(allow file-read-metadata (literal "/") (literal "/Users") (literal "/Users/me"))' in (
        lines
    )
    writes = [line for line in lines if "file-write" in line]
    assert writes == [
        '(allow file-read* file-write-data (literal "/dev/null"))',
        '(allow file-write* (subpath "/Users/me/src"))',
    ]
    # Nothing of the user's other files, nor all of /, is readable.
    assert '"/Users/me"))' not in profile.replace('(literal "/Users/me"))', "")
    assert '(subpath "/")' not in profile and "(allow default)" not in profile


def test_the_sandbox_profile_of_a_read_only_share_allows_no_writes_to_it() -> None:
    profile = sandbox_macos.sandbox_profile(
        ["/var/folders/x/share", "/private/var/folders/x/share"], False, "/usr/libexec/sftp-server"
    )
    assert "(allow file-write* " not in profile
    assert '(subpath "/private/var/folders/x/share") (subpath "/var/folders/x/share"))' in profile


def test_the_sandbox_profile_quotes_paths() -> None:
    profile = sandbox_macos.sandbox_profile(['/Users/me/a "b" \\c'], True, "/bin/s")
    assert '(subpath "/Users/me/a \\"b\\" \\\\c")' in profile
    assert sandbox_macos.ancestors("/a/b/c") == ["/", "/a", "/a/b"]
    with pytest.raises(ValueError):
        sandbox_macos.sandbox_profile(["relative"], True, "/bin/s")


# -- who may do what ----------------------------------------------------------------------


def test_the_guest_checks_modes_only_when_pyd_runs_as_root() -> None:
    """As root on the host, every container user would act as root in a share: the guest's
    kernel checks the host's owners and modes then. As any other user, a container user acts
    with that user's rights (as with Docker Desktop), and the host decides."""
    assert access_options(0) == ("default_permissions",)
    assert access_options(1000) == ()
    assert access_options(None) == ()  # Windows
    command = mount_command("/s", "/s", True, access_options(0))
    assert "-o slave,allow_other,no_contain_symlinks,default_permissions" in command


def _as_nobody() -> list[str]:
    return ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]


@pytest.mark.skipif(
    not (sys.platform == "linux" and os.geteuid() == 0 and shutil.which("setpriv")),
    reason="runs the server as another user: Linux, root and setpriv",
)
def test_an_unprivileged_user_gets_the_namespace_through_a_user_namespace() -> None:
    """pyd run by a normal user: the same confinement with CLONE_NEWUSER, uid mapped to
    itself (the system's python runs the module by path: it needs nothing but the stdlib)."""
    python = "/usr/bin/python3"
    module = str(Path(sandbox_macos.__file__).with_name("confine_linux.py"))
    probe = subprocess.run([*_as_nobody(), python, module, "--probe"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces for unprivileged users here: {probe.stderr!r}")
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        share, secret = Path(tmp) / "share", Path(tmp) / "secret"
        share.mkdir()
        secret.write_bytes(b"root's")
        os.utime(secret, (1_600_000_000, 1_600_000_000))
        os.chown(share, 65534, 65534)
        program = choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH}).program
        argv = [*_as_nobody(), python, module, str(share), "--", program, "-e"]
        with process_client(argv) as c:
            assert sorted(c.listdir("/")) == sorted({"dev", "etc", tmp.split("/")[1]})
            assert c.listdir(tmp) == ["share"]
            c.symlink(str(secret), f"{share}/evil")
            with pytest.raises(FileNotFoundError):
                c.utime(f"{share}/evil", (1, 1))
            with c.open(f"{share}/mine", "w") as f:
                f.write(b"x")
            assert c.stat(f"{share}/mine").st_uid == 65534
        assert (share / "mine").stat().st_uid == 65534  # the user itself, not root
        assert secret.stat().st_mtime == 1_600_000_000


@pytest.mark.skipif(sys.platform != "linux", reason="Linux mount namespaces")
def test_a_share_the_namespace_cannot_hold_is_served_by_the_built_in_server(
    tmp_path: Path,
) -> None:
    """pyd writes /etc and /dev of the new root and binds the system directories there: a
    share over one of them (or "/") would take them, so it goes to the built-in server; and
    the namespace refuses it too, before writing anything."""
    from pyd.mounts import confine_linux

    program = SYSTEM["linux"]
    for location in ("/", "/etc", "/etc/ssh", "/usr/local/src", "/dev", "/lib"):
        assert confine_linux.collision(location, program) is not None, location
    for location in ("/home/me", "/srv/data", str(tmp_path), "/tmp/x/etc"):
        assert confine_linux.collision(location, program) is None, location
    assert confine_linux.collision("/opt", "/opt/ssh/sftp-server") == "/opt/ssh/sftp-server"
    server = SftpServer(program, NAMESPACE)
    assert server.for_share("/home/me") is server
    fallback = server.for_share("/usr/local/src")
    assert fallback.builtin and "overlaps /usr" in fallback.note
    done = subprocess.run(
        [sys.executable, "-m", "pyd.mounts.confine_linux", "/etc", "--", program, "-e"],
        capture_output=True,
        input=b"",
        timeout=30,
    )
    assert done.returncode == 1 and b"overlaps /etc" in done.stderr
