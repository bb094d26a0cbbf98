"""pyd's built-in SFTP server, spoken to over real sockets by paramiko's SFTP client in the
role of the guest's sshfs: what sshfs needs works, and nothing leads out of the share or
changes a read-only one. Every test runs twice: walking with directory descriptors (Linux,
macOS) and with checked host paths (the fallback Windows uses)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
from paramiko.sftp import CMD_EXTENDED

from pyd.errors import PydError
from pyd.mounts import sftp_server
from pyd.mounts.sftp_server import serve_sftp

from .polling import until
from .sshserver import AllowAnyone, SSHServer, client_without_auth

SECRET = b"outside the share"


@contextlib.contextmanager
def sftp_session(
    root: Path, writable: bool, client_root: str | None = None
) -> Iterator[paramiko.SFTPClient]:
    """An SFTP client on a socket pair whose other end serve_sftp answers in a thread; on the
    way out the client hangs up and the server must return, without an error."""
    server_end, client_end = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            serve_sftp(server_end, root, writable, client_root=client_root)
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # paramiko's client logs with a channel name, which a socket lacks: the server's own
    # adapter gives it one.
    client = paramiko.SFTPClient(sftp_server._Channel(client_end))
    try:
        yield client
    finally:
        client.close()
        thread.join(10)
        assert not thread.is_alive(), "serve_sftp did not return when the stream ended"
        assert not errors
        assert server_end.fileno() == -1  # it closed its end


@dataclass
class Share:
    root: Path
    outside: Path
    client: paramiko.SFTPClient

    def path(self, rel: str = "") -> str:
        """How sshfs asks: the share's host path, then the name below it."""
        return f"{self.root}/{rel}"


@pytest.fixture(params=["dir-fd", "paths"])
def walk_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "dir-fd" and not sftp_server._USE_DIR_FD:
        pytest.skip("no *at() calls on this platform")
    monkeypatch.setattr(sftp_server, "_USE_DIR_FD", request.param == "dir-fd")
    return str(request.param)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """share/ (file.txt, dir/inner.txt), and next to it outside/secret.txt, share-evil/x.txt
    and file.txt: things the share must never reach."""
    root = tmp_path / "share"
    (root / "dir").mkdir(parents=True)
    (root / "file.txt").write_bytes(b"hello")
    (root / "dir" / "inner.txt").write_bytes(b"inner")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    (tmp_path / "share-evil").mkdir()
    (tmp_path / "share-evil" / "x.txt").write_bytes(SECRET)
    (tmp_path / "file.txt").write_bytes(SECRET)
    return root


@pytest.fixture
def share(tree: Path, walk_mode: str) -> Iterator[Share]:
    with sftp_session(tree, writable=True) as client:
        yield Share(tree, tree.parent / "outside", client)


@pytest.fixture
def ro_share(tree: Path, walk_mode: str) -> Iterator[Share]:
    with sftp_session(tree, writable=False) as client:
        yield Share(tree, tree.parent / "outside", client)


def extended(client: paramiko.SFTPClient, name: str, *args: object) -> paramiko.Message:
    """An OpenSSH extension request (paramiko's client has no call for most of them); an error
    status raises like any other request's."""
    _, msg = client._request(CMD_EXTENDED, name, *args)
    return msg


# -- what sshfs needs -------------------------------------------------------------------


def test_reads_and_writes_land_at_their_offsets(share: Share) -> None:
    with share.client.open(share.path("new.bin"), "w") as f:
        f.write(b"0123456789")
        f.seek(3)
        f.write(b"abc")
    assert (share.root / "new.bin").read_bytes() == b"012abc6789"
    with share.client.open(share.path("new.bin"), "r") as f:
        f.seek(6)
        assert f.read(2) == b"67"
    with share.client.open(share.path("new.bin"), "a") as f:
        f.write(b"!")
    assert (share.root / "new.bin").read_bytes() == b"012abc6789!"

    data = os.urandom(3 * 1024 * 1024 + 7)  # many pipelined 32 KiB requests each way
    share.client.putfo(io.BytesIO(data), share.path("big.bin"))
    assert (share.root / "big.bin").read_bytes() == data
    back = io.BytesIO()
    share.client.getfo(share.path("big.bin"), back)
    assert back.getvalue() == data


def test_stat_keeps_mode_size_owner_and_times(share: Share) -> None:
    host = share.root / "file.txt"
    host.chmod(0o640)
    os.utime(host, (1_000_000_000, 1_200_000_000))
    for attrs in (share.client.stat(share.path("file.txt")), share.client.lstat("file.txt")):
        assert attrs.st_mode == stat.S_IFREG | 0o640
        assert attrs.st_size == 5
        assert (attrs.st_atime, attrs.st_mtime) == (1_000_000_000, 1_200_000_000)
        assert (attrs.st_uid, attrs.st_gid) == (host.stat().st_uid, host.stat().st_gid)
    with share.client.open(share.path("file.txt")) as f:
        assert f.stat().st_mtime == 1_200_000_000
    os.utime(share.root, (1_000_000_000, 1_300_000_000))
    for root in (share.path(), ".", str(share.root)):  # sshfs looks at the root these ways
        assert stat.S_ISDIR(share.client.stat(root).st_mode)
        assert share.client.stat(root).st_mtime == 1_300_000_000


def test_names_with_spaces_and_non_ascii_letters_list_and_open(share: Share) -> None:
    spaced, accented, folder = "a file with spaces.txt", "Grüße Ωμέγα 日本.txt", "dossier été"
    (share.root / spaced).write_bytes(b"1")
    (share.root / accented).write_bytes(b"2")
    (share.root / folder).mkdir()
    listed = share.client.listdir(share.path())
    assert sorted(listed) == sorted(["file.txt", "dir", spaced, accented, folder])
    with share.client.open(share.path(accented)) as f:
        assert f.read() == b"2"
    with share.client.open(share.path(f"{folder}/ça va.txt"), "w") as f:
        f.write(b"3")
    assert (share.root / folder / "ça va.txt").read_bytes() == b"3"


@pytest.mark.skipif(sys.platform != "linux", reason="other hosts refuse such names")
def test_listing_leaves_out_names_that_are_not_utf8(share: Share) -> None:
    os.close(os.open(os.fsencode(share.root) + b"/bad\xff", os.O_CREAT | os.O_WRONLY))
    assert sorted(share.client.listdir(share.path())) == ["dir", "file.txt"]


def test_mkdir_rename_remove_and_rmdir(share: Share) -> None:
    share.client.mkdir(share.path("made"), 0o750)
    assert stat.S_IMODE((share.root / "made").stat().st_mode) == 0o750 & ~_umask()
    share.client.rename(share.path("file.txt"), share.path("made/moved.txt"))
    assert (share.root / "made" / "moved.txt").read_bytes() == b"hello"
    assert not (share.root / "file.txt").exists()
    share.client.remove(share.path("made/moved.txt"))
    share.client.rmdir(share.path("made"))
    assert sorted(os.listdir(share.root)) == ["dir"]


def test_rename_refuses_to_replace_and_posix_rename_replaces(share: Share) -> None:
    (share.root / "other.txt").write_bytes(b"other")
    with pytest.raises(OSError):
        share.client.rename(share.path("file.txt"), share.path("other.txt"))
    assert (share.root / "other.txt").read_bytes() == b"other"
    share.client.posix_rename(share.path("file.txt"), share.path("other.txt"))
    assert (share.root / "other.txt").read_bytes() == b"hello"
    assert not (share.root / "file.txt").exists()


def test_setstat_changes_mode_times_and_size(share: Share) -> None:
    host = share.root / "file.txt"
    share.client.chmod(share.path("file.txt"), 0o604)
    share.client.utime(share.path("file.txt"), (1_000_000_000, 1_100_000_000))
    assert stat.S_IMODE(host.stat().st_mode) == 0o604
    assert host.stat().st_mtime == 1_100_000_000
    share.client.truncate(share.path("file.txt"), 2)
    assert host.read_bytes() == b"he"
    with share.client.open(share.path("file.txt"), "r+") as f:  # the same on an open file
        f.truncate(1)
        f.chmod(0o600)
        f.utime((1_000_000_000, 1_000_000_001))
    assert host.read_bytes() == b"h"
    assert stat.S_IMODE(host.stat().st_mode) == 0o600
    assert host.stat().st_mtime == 1_000_000_001


def test_symlinks_that_stay_inside_work(share: Share) -> None:
    os.symlink("dir/inner.txt", share.root / "rel")
    os.symlink(f"{share.root}/dir", share.root / "abs")
    os.symlink("../file.txt", share.root / "dir" / "up")
    with share.client.open(share.path("rel")) as f:
        assert f.read() == b"inner"
    with share.client.open(share.path("dir/up")) as f:
        assert f.read() == b"hello"
    assert sorted(share.client.listdir(share.path("abs"))) == ["inner.txt", "up"]
    assert share.client.readlink(share.path("rel")) == "dir/inner.txt"
    assert stat.S_ISLNK(share.client.lstat(share.path("rel")).st_mode)
    assert stat.S_ISREG(share.client.stat(share.path("rel")).st_mode)

    share.client.symlink("../file.txt", share.path("dir/made"))
    assert os.readlink(share.root / "dir" / "made") == "../file.txt"
    share.client.symlink(f"{share.root}/dir/inner.txt", share.path("made-abs"))
    with share.client.open(share.path("made-abs")) as f:
        assert f.read() == b"inner"


def test_realpath_names_paths_the_way_the_client_does(share: Share) -> None:
    assert share.client.normalize(".") == str(share.root)
    assert share.client.normalize("dir/../file.txt") == f"{share.root}/file.txt"


def test_a_client_root_is_the_name_the_share_goes_by(tree: Path, walk_mode: str) -> None:
    """As on Windows, where sshfs asks for /C:/Users/me/share: that name maps to the root."""
    with sftp_session(tree, writable=True, client_root="/C:/Users/me/share") as client:
        with client.open("/C:/Users/me/share/dir/inner.txt") as f:
            assert f.read() == b"inner"
        assert sorted(client.listdir("/C:/Users/me/share")) == ["dir", "file.txt"]
        assert client.normalize("dir") == "/C:/Users/me/share/dir"
        for elsewhere in (f"{tree}/file.txt", "/C:/Users/me/file.txt", "/C:/Users/me/share2"):
            with pytest.raises(PermissionError):
                client.stat(elsewhere)


def test_advertises_the_openssh_extensions_sshfs_looks_for(tree: Path) -> None:
    server_end, client_end = socket.socketpair()
    thread = threading.Thread(target=serve_sftp, args=(server_end, tree, True), daemon=True)
    thread.start()
    client_end.sendall(struct.pack(">IBI", 5, 1, 3))  # SSH_FXP_INIT, version 3
    client_end.settimeout(10)
    (length,) = struct.unpack(">I", _recv_exactly(client_end, 4))
    body = _recv_exactly(client_end, length)
    client_end.close()
    thread.join(10)
    assert body[0] == 2 and struct.unpack(">I", body[1:5]) == (3,)  # SSH_FXP_VERSION 3
    fields, rest = [], body[5:]
    while rest:  # name, value, name, value... each a uint32 length and bytes
        (n,) = struct.unpack(">I", rest[:4])
        fields.append(rest[4 : 4 + n].decode())
        rest = rest[4 + n :]
    extensions = dict(zip(fields[::2], fields[1::2], strict=True))
    assert extensions["posix-rename@openssh.com"] == "1"
    assert extensions["hardlink@openssh.com"] == "1"
    assert extensions["fsync@openssh.com"] == "1"
    if hasattr(os, "statvfs"):
        assert extensions["statvfs@openssh.com"] == "2"


@pytest.mark.skipif(not hasattr(os, "statvfs"), reason="no statvfs on this host")
@pytest.mark.parametrize("writable", [True, False])
def test_statvfs_says_whether_the_share_is_read_only(tree: Path, writable: bool) -> None:
    with sftp_session(tree, writable) as client:
        msg = extended(client, "statvfs@openssh.com", f"{tree}/dir")
    values = [msg.get_int64() for _ in range(11)]
    assert values[0] == os.statvfs(tree).f_bsize
    assert bool(values[9] & 1) is (not writable or bool(os.statvfs(tree).f_flag & os.ST_RDONLY))


def test_hardlink_and_fsync_extensions(share: Share) -> None:
    extended(share.client, "hardlink@openssh.com", share.path("file.txt"), share.path("hard"))
    assert (share.root / "hard").samefile(share.root / "file.txt")
    with share.client.open(share.path("file.txt"), "r+") as f:
        f.write(b"J")
        extended(share.client, "fsync@openssh.com", f.handle)
    assert (share.root / "hard").read_bytes() == b"Jello"


# -- nothing outside --------------------------------------------------------------------

OUTSIDE_PATHS = [
    "{root}/../outside/secret.txt",
    "../outside/secret.txt",
    "dir/../../outside/secret.txt",
    "{outside}/secret.txt",
    "{root}-evil/x.txt",
    "/etc/passwd",
    "{root}/../file.txt",
]


@pytest.mark.parametrize("template", OUTSIDE_PATHS)
def test_paths_outside_the_share_are_refused(share: Share, template: str) -> None:
    path = template.format(root=share.root, outside=share.outside)
    for attempt in (
        lambda: share.client.open(path).read(),
        lambda: share.client.stat(path),
        lambda: share.client.lstat(path),
        lambda: share.client.listdir(path.rsplit("/", 1)[0] or "/"),
        lambda: share.client.open(path.replace("secret", "new"), "w"),
        lambda: share.client.chmod(path, 0o777),
        lambda: share.client.remove(path),
    ):
        with pytest.raises(PermissionError):
            attempt()
    assert (share.outside / "secret.txt").read_bytes() == SECRET
    assert sorted(os.listdir(share.outside)) == ["secret.txt"]


def test_symlinks_leading_outside_are_refused_for_read_list_and_write(share: Share) -> None:
    secret = share.outside / "secret.txt"
    mode_before = secret.stat().st_mode
    os.symlink(share.outside, share.root / "out")  # absolute, to a directory
    os.symlink(secret, share.root / "secret")  # absolute, to a file
    os.symlink("../outside", share.root / "rel-out")  # relative
    os.symlink("rel-out", share.root / "hop")  # a link to a link
    os.symlink("..", share.root / "up")
    os.symlink("../../outside", share.root / "dir" / "deep")
    os.symlink(share.outside / "dropped.txt", share.root / "drop")  # dangling

    refused: list[Callable[[], object]] = [
        # read through them
        lambda: share.client.open(share.path("secret")).read(),
        lambda: share.client.open(share.path("out/secret.txt")).read(),
        lambda: share.client.open(share.path("rel-out/secret.txt")).read(),
        lambda: share.client.open(share.path("hop/secret.txt")).read(),
        lambda: share.client.open(share.path("up/outside/secret.txt")).read(),
        lambda: share.client.open(share.path("dir/deep/secret.txt")).read(),
        lambda: share.client.stat(share.path("secret")),
        lambda: share.client.stat(share.path("out/secret.txt")),
        # list through them
        lambda: share.client.listdir(share.path("out")),
        lambda: share.client.listdir(share.path("up")),
        lambda: share.client.listdir(share.path("hop")),
        lambda: share.client.listdir(share.path("dir/deep")),
        # write through them
        lambda: share.client.open(share.path("secret"), "w"),
        lambda: share.client.open(share.path("secret"), "a"),
        lambda: share.client.open(share.path("out/new.txt"), "w"),
        lambda: share.client.open(share.path("drop"), "w"),
        lambda: share.client.mkdir(share.path("out/newdir")),
        lambda: share.client.chmod(share.path("secret"), 0o777),
        lambda: share.client.truncate(share.path("secret"), 0),
        lambda: share.client.rename(share.path("file.txt"), share.path("out/stolen.txt")),
        lambda: share.client.remove(share.path("out/secret.txt")),
        lambda: share.client.symlink("x", share.path("out/link")),  # in outside/: refused
    ]
    for attempt in refused:
        with pytest.raises(PermissionError):
            attempt()

    assert secret.read_bytes() == SECRET
    assert secret.stat().st_mode == mode_before
    assert sorted(os.listdir(share.outside)) == ["secret.txt"]
    assert (share.root / "file.txt").read_bytes() == b"hello"
    # The links themselves are visible as links.
    assert stat.S_ISLNK(share.client.lstat(share.path("secret")).st_mode)
    assert share.client.readlink(share.path("secret")) == str(secret)
    assert share.client.readlink(share.path("rel-out")) == "../outside"


@pytest.mark.parametrize(
    "target",
    [
        "{outside}/secret.txt",
        "../outside/secret.txt",
        "..",
        "dir/../../outside",
        "/etc/passwd",
        "{root}/../outside",
        "{root}-evil/x.txt",
    ],
)
def test_a_symlink_that_leads_outside_is_made_but_never_followed(share: Share, target: str) -> None:
    """Link texts are data (a venv's bin/python -> /usr/local/bin/python3 must work): the
    link is made, and every request that would follow it is refused."""
    secret = share.outside / "secret.txt"
    before = secret.stat()
    text = target.format(root=share.root, outside=share.outside)
    nested = text if text.startswith("/") else "../" + text  # the same place, one level down
    share.client.symlink(text, share.path("evil"))
    share.client.symlink(nested, share.path("dir/evil"))
    for link in ("evil", "dir/evil"):
        assert share.client.readlink(share.path(link)) == (text if link == "evil" else nested)
        assert stat.S_ISLNK(share.client.lstat(share.path(link)).st_mode)
        p, c = share.path(link), share.client
        for call, args in (
            (c.stat, ()),
            (c.open, ("r",)),
            (c.open, ("a",)),
            (c.chown, (1234, 1234)),
            (c.utime, ((1, 1),)),
            (c.chmod, (0o777,)),
        ):
            with pytest.raises(PermissionError):
                call(p, *args)
    after = secret.stat()
    assert (after.st_uid, after.st_mode, after.st_mtime_ns) == (
        before.st_uid, before.st_mode, before.st_mtime_ns)  # fmt: skip
    assert secret.read_bytes() == SECRET


def test_a_link_moved_to_where_it_leads_outside_is_refused_when_followed(share: Share) -> None:
    share.client.symlink("../file.txt", share.path("dir/link"))  # the share's file.txt: fine
    with share.client.open(share.path("dir/link")) as f:
        assert f.read() == b"hello"
    share.client.rename(share.path("dir/link"), share.path("link"))  # now ../file.txt is outside
    with pytest.raises(PermissionError):
        share.client.open(share.path("link")).read()


def test_a_directory_swapped_for_a_symlink_mid_walk_is_not_followed(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the descriptor walk closes: "dir" is a directory when looked at, and a symlink
    to outside/ by the time the walk goes into it."""
    if not sftp_server._USE_DIR_FD:
        pytest.skip("the path walk cannot close this race (see the module doc)")
    looked_at = sftp_server._Place.lstat

    def lstat_then_swap(place: sftp_server._Place) -> os.stat_result:
        st = looked_at(place)
        if place.arg == "dir" and not os.path.islink(tree / "dir"):
            os.rename(tree / "dir", tree / "dir-before")
            os.symlink(tree.parent / "outside", tree / "dir")
        return st

    monkeypatch.setattr(sftp_server._Place, "lstat", lstat_then_swap)
    with sftp_session(tree, writable=True) as client:
        with pytest.raises(OSError) as refused:
            client.open(f"{tree}/dir/secret.txt").read()
        assert os.path.islink(tree / "dir")  # the swap did happen
    assert refused.value.errno in (errno.ENOENT, errno.EACCES)


def test_a_file_swapped_for_a_symlink_before_chmod_keeps_the_outside_mode(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SETSTAT's chmod: "file.txt" is a file when the walk looks at it, and a symlink to
    outside/secret.txt by the time the mode is set (Linux has no lchmod)."""
    if not sftp_server._USE_DIR_FD:
        pytest.skip("the path walk cannot close this race (see the module doc)")
    secret = tree.parent / "outside" / "secret.txt"
    os.chmod(secret, 0o600)
    looked_at = sftp_server._Place.lstat

    def lstat_then_swap(place: sftp_server._Place) -> os.stat_result:
        st = looked_at(place)
        if place.arg == "file.txt" and not os.path.islink(tree / "file.txt"):
            os.rename(tree / "file.txt", tree / "file-before")
            os.symlink(secret, tree / "file.txt")
        return st

    monkeypatch.setattr(sftp_server._Place, "lstat", lstat_then_swap)
    with sftp_session(tree, writable=True) as client:
        with pytest.raises(OSError):
            client.chmod(f"{tree}/file.txt", 0o777)
        assert os.path.islink(tree / "file.txt")  # the swap did happen
    assert secret.stat().st_mode & 0o777 == 0o600


def test_the_share_root_cannot_be_removed_or_renamed(share: Share) -> None:
    with pytest.raises(PermissionError):
        share.client.rmdir(share.path())
    with pytest.raises(PermissionError):
        share.client.posix_rename(share.path(), share.path("dir/root"))
    assert (share.root / "file.txt").exists()


# -- read-only ----------------------------------------------------------------------------


def test_read_only_share_refuses_every_change_and_leaves_files_alone(ro_share: Share) -> None:
    share, client = ro_share, ro_share.client
    before = _snapshot(share.root)
    uid, gid = os.stat(share.root / "file.txt").st_uid, os.stat(share.root / "file.txt").st_gid
    changes: list[Callable[[], object]] = [
        lambda: client.open(share.path("file.txt"), "w"),
        lambda: client.open(share.path("file.txt"), "a"),
        lambda: client.open(share.path("file.txt"), "r+"),
        lambda: client.open(share.path("new.txt"), "w"),
        lambda: client.open(share.path("new.txt"), "x"),
        lambda: client.remove(share.path("file.txt")),
        lambda: client.rename(share.path("file.txt"), share.path("renamed.txt")),
        lambda: client.posix_rename(share.path("file.txt"), share.path("dir/inner.txt")),
        lambda: client.mkdir(share.path("newdir")),
        lambda: client.rmdir(share.path("dir")),
        lambda: client.chmod(share.path("file.txt"), 0o777),
        lambda: client.chown(share.path("file.txt"), uid, gid),
        lambda: client.utime(share.path("file.txt"), (1, 1)),
        lambda: client.truncate(share.path("file.txt"), 0),
        lambda: client.symlink("file.txt", share.path("link")),
        lambda: extended(client, "hardlink@openssh.com", share.path("file.txt"), share.path("h")),
    ]
    for change in changes:
        with pytest.raises(PermissionError):
            change()
    with client.open(share.path("file.txt")) as f:  # reading works, changing the open file not
        assert f.read() == b"hello"
        with pytest.raises(PermissionError):
            f.chmod(0o777)
        with pytest.raises(PermissionError):
            f.truncate(0)
    assert _snapshot(share.root) == before


# -- the stream ---------------------------------------------------------------------------


class _ExecServer(AllowAnyone):
    """The guest's sshd: runs any command, handing its channel to the test as sshfs."""

    def __init__(self) -> None:
        self.commands: list[bytes] = []

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands.append(command)
        return True


def test_serves_on_the_client_end_of_an_exec_channel(tree: Path) -> None:
    a, b = socket.socketpair()
    interface = _ExecServer()
    guest_channels: queue.Queue[paramiko.Channel] = queue.Queue()
    ssh = SSHServer(paramiko.Transport(b), interface, guest_channels.put)
    transport = client_without_auth(a, ssh)
    try:
        chan = transport.open_session(timeout=10)
        chan.exec_command(f"sshfs :{tree} /mnt -o slave")
        thread = threading.Thread(target=serve_sftp, args=(chan, tree, True), daemon=True)
        thread.start()
        sshfs = paramiko.SFTPClient(guest_channels.get(timeout=10))
        with sshfs.open(f"{tree}/made.txt", "w") as f:
            f.write(b"over ssh")
        assert (tree / "made.txt").read_bytes() == b"over ssh"
        with pytest.raises(PermissionError):
            sshfs.open(f"{tree}/../outside/secret.txt")
        sshfs.close()
        thread.join(10)
        assert not thread.is_alive()
        assert chan.closed
        assert interface.commands == [f"sshfs :{tree} /mnt -o slave".encode()]
    finally:
        transport.close()
        ssh.close()


@pytest.mark.skipif(
    not (shutil.which("sshfs") and shutil.which("fusermount3") and os.access("/dev/fuse", os.W_OK)),
    reason="needs sshfs and FUSE on this machine",
)
def test_the_real_sshfs_mounts_the_share_in_slave_mode(tree: Path, tmp_path: Path) -> None:
    """What the guest runs, on this machine: `sshfs :ROOT MNT -o slave` on a socket pair."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    os.symlink(tree.parent / "outside", tree / "out")
    server_end, sshfs_end = socket.socketpair()
    thread = threading.Thread(target=serve_sftp, args=(server_end, tree, True), daemon=True)
    thread.start()
    sshfs = subprocess.Popen(
        ["sshfs", f":{tree}", str(mnt), "-o", "slave"], stdin=sshfs_end, stdout=sshfs_end
    )
    sshfs_end.close()
    try:
        with contextlib.suppress(AssertionError):  # still not mounted: skipped below
            until(lambda: os.path.ismount(mnt) or sshfs.poll() is not None, 10, 0.05)
        if not os.path.ismount(mnt):
            pytest.skip("sshfs could not mount here (FUSE not permitted?)")
        assert (mnt / "file.txt").read_bytes() == b"hello"
        (mnt / "new.txt").write_bytes(b"new")
        os.rename(mnt / "new.txt", mnt / "file.txt")  # over an existing file: posix-rename
        assert (tree / "file.txt").read_bytes() == b"new"
        assert sorted(os.listdir(mnt)) == ["dir", "file.txt", "out"]
        with pytest.raises(PermissionError):
            (mnt / "out" / "secret.txt").read_bytes()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
        try:
            sshfs.wait(10)
        except subprocess.TimeoutExpired:
            sshfs.kill()
            sshfs.wait()
        thread.join(10)
    assert not thread.is_alive()


def test_a_missing_root_is_reported_and_the_stream_closed(tmp_path: Path) -> None:
    server_end, client_end = socket.socketpair()
    with pytest.raises(PydError, match="cannot share"):
        serve_sftp(server_end, tmp_path / "missing", True)
    assert server_end.fileno() == -1
    client_end.settimeout(10)
    assert client_end.recv(10) == b""


def test_returns_when_the_stream_ends_before_the_hello(tree: Path) -> None:
    server_end, client_end = socket.socketpair()
    client_end.close()
    serve_sftp(server_end, tree, True)  # returns, does not raise
    assert server_end.fileno() == -1


def test_a_client_that_does_not_speak_sftp_is_reported(tree: Path) -> None:
    server_end, client_end = socket.socketpair()
    client_end.sendall(struct.pack(">IB", 1, 99))  # a packet, but not SSH_FXP_INIT
    with pytest.raises(PydError, match="did not speak SFTP"):
        serve_sftp(server_end, tree, True)
    assert server_end.fileno() == -1


# -- helpers ------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(errno.ECONNRESET)
        data += chunk
    return data


def _snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under root: mode, size, mtime and contents (or link text)."""
    out = {}
    for entry in sorted(root.rglob("*")):
        st = entry.lstat()
        if entry.is_symlink():
            body = os.readlink(entry).encode()
        elif entry.is_file():
            body = entry.read_bytes()
        else:
            body = b""
        out[str(entry.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, body)
    return out


def test_a_listing_comes_a_hundred_names_per_readdir(share: Share) -> None:
    """As OpenSSH's server answers (paramiko's default is 16): fewer round trips per
    directory for sshfs."""
    from paramiko.sftp import CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR

    for i in range(250):
        (share.root / "dir" / f"n{i:03d}").write_bytes(b"")
    t, msg = share.client._request(CMD_OPENDIR, share.path("dir"))
    assert t == CMD_HANDLE
    handle = msg.get_binary()
    counts = []
    while True:
        try:
            t, msg = share.client._request(CMD_READDIR, handle)
        except EOFError:
            break
        assert t == CMD_NAME
        counts.append(msg.get_int())
    assert counts == [100, 100, 53]  # 250, inner.txt, "." and ".."
