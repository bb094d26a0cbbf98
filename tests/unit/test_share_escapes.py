"""No share server lets its client reach a file outside the share (issue 13). Every server
pyd ships on this host runs as the real process the agent starts (the built-in
`python -m pyd.mounts.sftp_serve`, and OpenSSH's sftp-server in its mount namespace), spoken
to by paramiko's SFTP client over pipes, and by the real sshfs on a FUSE mount as the guest's
sshfs would. Each escape is tried; then the outside file's owner, mode, times and content,
and the outside directory's listing, must be as they were."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from pyd.host.threads import Deadline
from pyd.mounts.openssh_link import OpenSSHLink
from pyd.mounts.sftp_host import BUILTIN, OPENSSH, SftpServer, choose_server
from pyd.mounts.sftp_serve import PipeStream
from pyd.mounts.sftp_server import _Channel

from .polling import until

SECRET = b"outside the share"
MTIME = 1_600_000_000
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux servers")


class Unconfined(SftpServer):
    """The system's sftp-server as Lima runs it, to show what the tests catch."""

    def argv(self, location: str, writable: bool) -> list[str]:
        return [self.program, "-e", *(() if writable else ("-R",))]


def _servers() -> dict[str, SftpServer]:
    system = choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH})
    assert not system.builtin, f"OpenSSH sftp-server not confinable here: {system.note}"
    return {"builtin": choose_server(sys.platform, {"PYD_SFTP_SERVER": BUILTIN}), "openssh": system}


SERVERS = _servers()


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> SftpServer:
    return SERVERS[request.param]


@dataclass
class Tree:
    root: Path
    outside: Path  # a directory next to the share
    secret: Path  # outside/secret.txt

    def fingerprint(self) -> tuple[object, ...]:
        st = os.stat(self.secret)
        return (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns,
                self.secret.read_bytes(), sorted(os.listdir(self.outside)))  # fmt: skip


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    root = tmp_path / "share"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "secret.txt").write_bytes(b"inside")
    (root / "file.txt").write_bytes(b"hello")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    os.chmod(secret, 0o600)
    os.utime(secret, (MTIME, MTIME))
    return Tree(root, outside, secret)


@contextlib.contextmanager
def process_client(argv: list[str]) -> Iterator[paramiko.SFTPClient]:
    """paramiko's SFTP client on the pipes of a real server process; on the way out the
    pipes close and the server must exit 0. The client gets its own copies of the pipe
    descriptors, so that nothing closes a descriptor number twice."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    stream = PipeStream(os.dup(proc.stdout.fileno()), os.dup(proc.stdin.fileno()))
    sftp = paramiko.SFTPClient(_Channel(stream))
    try:
        yield sftp
    finally:
        sftp.close()
        proc.stdin.close()
        proc.stdout.close()
        assert proc.wait(10) == 0


def client(
    server: SftpServer, root: Path, writable: bool = True
) -> contextlib.AbstractContextManager[paramiko.SFTPClient]:
    return process_client(server.argv(str(root), writable))


def _attempt(what: Callable[..., object], *args: object, **kwargs: object) -> object:
    """Runs one escape attempt: an error is the expected answer; a value is returned."""
    try:
        return what(*args, **kwargs)
    except (OSError, paramiko.SSHException):
        return None


def _create(c: paramiko.SFTPClient, path: str) -> None:
    c.open(path, "w").close()


def _read(c: paramiko.SFTPClient, path: str) -> bytes | None:
    with c.open(path) as f:
        data: bytes = f.read()
        return data


def _append(c: paramiko.SFTPClient, path: str) -> None:
    with c.open(path, "a") as f:
        f.write(b"pwned")


def _setstat_everything(c: paramiko.SFTPClient, path: str) -> None:
    """What `chown -h`, `touch -h` and `chmod` make sshfs send: SETSTAT by path."""
    for call in (
        lambda: c.chown(path, 1234, 1234),
        lambda: c.utime(path, (946_598_400, 946_598_400)),
        lambda: c.chmod(path, 0o777),
        lambda: c.truncate(path, 0),
    ):
        _attempt(call)


def _hardlink(c: paramiko.SFTPClient, old: str, new: str) -> None:
    c._request(paramiko.sftp.CMD_EXTENDED, "hardlink@openssh.com", old, new)


def test_symlinks_made_by_the_client_change_and_reveal_nothing_outside(
    server: SftpServer, tree: Tree
) -> None:
    """The finding itself (symlink + SETSTAT by path), with absolute and relative links, links
    to links and to the directory, then OPEN through each for reading and writing."""
    before = tree.fingerprint()
    r = str(tree.root)
    links = {
        "abs": str(tree.secret),
        "rel": "../outside/secret.txt",
        "deep": "../../outside/secret.txt",
        "dir": str(tree.outside),
        "reldir": "../outside",
        "up": "..",
        "hop": "rel",
    }
    with client(server, tree.root) as c:
        for name, text in links.items():
            where = f"{r}/dir/{name}" if name == "deep" else f"{r}/{name}"
            _attempt(c.symlink, text, where)
        for path in (f"{r}/abs", f"{r}/rel", f"{r}/dir/deep", f"{r}/hop",
                     f"{r}/dir/secret.txt/../../abs", f"{r}/up/outside/secret.txt",
                     f"{r}/dir/secret.txt", f"{r}/reldir/secret.txt"):  # fmt: skip
            _setstat_everything(c, path)
            assert _attempt(_read, c, path) != SECRET
            _attempt(_append, c, path)
        for d in (f"{r}/dir", f"{r}/reldir", f"{r}/up/outside"):
            _attempt(_create, c, f"{d}/new.txt")
            listing = _attempt(c.listdir, d)
            if d != f"{r}/dir":  # the share's own dir has a secret.txt; outside/ must not show
                assert not isinstance(listing, list) or "secret.txt" not in listing
    # The share's own dir/secret.txt took the SETSTATs; nothing outside did.
    assert tree.fingerprint() == before


@pytest.mark.parametrize(
    "path",
    ["{root}/../outside/secret.txt", "{root}/dir/../../outside/secret.txt",
     "../outside/secret.txt", "{outside}/secret.txt", "/../{outside}/secret.txt"],
)  # fmt: skip
def test_dot_dot_and_outside_paths_change_nothing(
    server: SftpServer, tree: Tree, path: str
) -> None:
    before = tree.fingerprint()
    p = path.format(root=tree.root, outside=tree.outside)
    with client(server, tree.root) as c:
        _setstat_everything(c, p)
        assert _attempt(_read, c, p) != SECRET
        _attempt(_append, c, p)
        _attempt(c.remove, p)
        _attempt(c.rename, p, f"{tree.root}/stolen")
    assert tree.fingerprint() == before
    assert not (tree.root / "stolen").exists()


def test_hard_links_to_outside_files_are_not_made(server: SftpServer, tree: Tree) -> None:
    before = tree.fingerprint()
    r = str(tree.root)
    with client(server, tree.root) as c:
        _attempt(_hardlink, c, str(tree.secret), f"{r}/hard")
        _attempt(_hardlink, c, f"{r}/../outside/secret.txt", f"{r}/hard2")
        _attempt(c.symlink, str(tree.secret), f"{r}/link")
        _attempt(_hardlink, c, f"{r}/link", f"{r}/hard3")  # a link to the symlink
        for name in ("hard", "hard2", "hard3"):
            _setstat_everything(c, f"{r}/{name}")
            assert _attempt(_read, c, f"{r}/{name}") != SECRET
            _attempt(_append, c, f"{r}/{name}")
    assert tree.fingerprint() == before
    assert os.stat(tree.secret).st_nlink == 1  # (the appends made new files of their own)


def test_nothing_is_renamed_out_of_the_share(server: SftpServer, tree: Tree) -> None:
    before = tree.fingerprint()
    r = str(tree.root)
    with client(server, tree.root) as c:
        _attempt(c.symlink, str(tree.outside), f"{r}/out")
        for new in (f"{tree.outside}/stolen", f"{r}/../outside/stolen", f"{r}/out/stolen"):
            _attempt(c.rename, f"{r}/file.txt", new)
            _attempt(c.posix_rename, f"{r}/file.txt", new)
        _attempt(c.posix_rename, f"{r}/file.txt", f"{r}/out/secret.txt")
    assert tree.fingerprint() == before
    assert (tree.root / "file.txt").read_bytes() == b"hello"


def test_a_directory_swapped_for_a_symlink_leads_nowhere_outside(
    server: SftpServer, tree: Tree
) -> None:
    """The race a path-based server loses: `dir` turns into a link to outside/ and back as
    fast as the host can, while the client changes and writes dir/secret.txt."""
    before = tree.fingerprint()
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        d, away, link = tree.root / "dir", tree.root / "dir-away", tree.root / "dir-link"
        os.symlink(tree.outside, link)
        while not stop.is_set():
            os.rename(d, away)
            os.rename(link, d)  # dir is now the symlink
            os.rename(d, link)
            os.rename(away, d)
            swaps += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        with client(server, tree.root) as c:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                path = f"{tree.root}/dir/secret.txt"
                _attempt(c.chown, path, 1234, 1234)
                _attempt(c.utime, path, (946_598_400, 946_598_400))
                _attempt(_append, c, path)
                assert _attempt(_read, c, path) != SECRET
    finally:
        stop.set()
        thread.join(10)
    assert swaps > 100  # the race was run
    assert tree.fingerprint() == before


def test_a_read_only_share_changes_nothing(server: SftpServer, tree: Tree) -> None:
    inside = tree.root / "file.txt"
    st = inside.stat()
    with client(server, tree.root, writable=False) as c:
        assert _read(c, f"{tree.root}/file.txt") == b"hello"
        _setstat_everything(c, f"{tree.root}/file.txt")
        _attempt(_append, c, f"{tree.root}/file.txt")
        _attempt(c.mkdir, f"{tree.root}/new")
    after = inside.stat()
    assert (after.st_uid, after.st_mode, after.st_mtime_ns) == (
        st.st_uid,
        st.st_mode,
        st.st_mtime_ns,
    )
    assert inside.read_bytes() == b"hello"
    assert sorted(os.listdir(tree.root)) == ["dir", "file.txt"]


_FUSE = bool(
    shutil.which("sshfs") and shutil.which("fusermount3") and os.access("/dev/fuse", os.W_OK)
)


@pytest.mark.skipif(not _FUSE, reason="needs sshfs and FUSE on this machine")
def test_the_finding_through_the_real_sshfs(server: SftpServer, tree: Tree, tmp_path: Path) -> None:
    """`ln -s OUTSIDE evil; chown -h 1234:1234 evil; touch -h -d 1999-12-31 evil` on an sshfs
    mount: the real sshfs in slave mode, piped to the real server process as the agent pipes
    the guest's (OpenSSHLink), the calls made on the mount as a container makes them."""
    before = tree.fingerprint()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sshfs = ["sshfs", f":{tree.root}", str(mnt), "-o", "slave,no_contain_symlinks"]
    link = OpenSSHLink(sshfs, server.argv(str(tree.root), True))
    link.start()

    def mounted() -> bool:
        assert link.running(), link.ended()
        return os.path.ismount(mnt)

    try:
        until(mounted, 10, 0.05, "sshfs mounts the share")
        assert (mnt / "file.txt").read_bytes() == b"hello"  # it serves
        for name, text in (("abs", str(tree.secret)), ("rel", "../outside/secret.txt")):
            # The built-in server refuses to make a link that leads out.
            made = _attempt(os.symlink, text, mnt / name) is None and os.path.lexists(
                tree.root / name
            )
            if made:
                assert stat.S_ISLNK(os.lstat(mnt / name).st_mode)
            _attempt(os.chown, mnt / name, 1234, 1234, follow_symlinks=False)
            _attempt(os.utime, mnt / name, (946_598_400,) * 2, follow_symlinks=False)
        for name in ("hard",):
            _attempt(os.link, mnt / "abs", mnt / name, follow_symlinks=False)
            _attempt(os.chown, mnt / name, 1234, 1234, follow_symlinks=False)
            _attempt(os.utime, mnt / name, (946_598_400,) * 2, follow_symlinks=False)
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
        link.close()
        link.join(Deadline(10))
    assert tree.fingerprint() == before


def test_these_checks_catch_a_server_that_is_not_confined(tree: Tree) -> None:
    """The finding against the system's sftp-server run as Lima runs it: the outside file's
    owner and mtime change, so the checks above would see an escape."""
    before = tree.fingerprint()
    program = choose_server(sys.platform, {"PYD_SFTP_SERVER": OPENSSH}).program
    with client(Unconfined(program, "none"), tree.root) as c:
        c.symlink(str(tree.secret), f"{tree.root}/evil")
        c.chown(f"{tree.root}/evil", 1234, 1234)
        c.utime(f"{tree.root}/evil", (946_598_400, 946_598_400))
    st = os.stat(tree.secret)
    assert (st.st_uid, st.st_mtime_ns) == (1234, 946_598_400 * 10**9)
    assert tree.fingerprint() != before
