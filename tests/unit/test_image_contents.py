"""The content listing of an image's root filesystem (pyd/image/contents.py), on tiny ext4
filesystems made with `mkfs.ext4 -d` from trees built here (e2fsprogs; fast)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pyd.errors import EnvironmentProblem, ImageError
from pyd.image import contents
from pyd.image.contents import (
    Entry,
    differences,
    filesystem_contents,
    parse_ls,
    render,
    rootfs_contents,
    split_batch,
)

ROOT = os.geteuid() == 0
LONG = "/usr/lib/" + "x" * 80  # longer than 60 bytes: a "slow" symlink, stored in a block


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tree(root: Path, reverse: bool = False) -> None:
    """A small tree with each kind of entry; `reverse` creates them in the other order, so
    the filesystem gets other inode numbers for the same contents."""

    def put(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    steps: list[Callable[[], object]] = [
        lambda: put("etc/hostname", b"pyd\n"),
        lambda: put("usr/bin/su", b"\x7fELF su"),
        lambda: put("usr/bin/with space", b""),
        lambda: (root / "bin").symlink_to("usr/bin"),
        lambda: (root / "long").symlink_to(LONG),
        lambda: os.mkfifo(root / "fifo"),
    ]
    root.mkdir()
    for step in reversed(steps) if reverse else steps:
        step()
    su = root / "usr" / "bin" / "su"
    if ROOT:
        os.chown(su, 0, 5)
        os.mknod(root / "null", 0o20666, os.makedev(1, 3))
        (root / "null").chmod(0o666)  # past the umask
    su.chmod(0o4755)  # after chown, which clears set-id bits
    os.link(su, root / "usr" / "bin" / "su-link")


def make_fs(tree: Path, out: Path) -> Path:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", str(tree), str(out), "4M"],
        check=True,
        env={**os.environ, "E2FSPROGS_FAKE_TIME": "1767225600"},
    )
    return out


@pytest.fixture
def fs(tmp_path: Path) -> Path:
    make_tree(tmp_path / "tree")
    return make_fs(tmp_path / "tree", tmp_path / "fs.raw")


def by_path(entries: list[Entry]) -> dict[str, Entry]:
    return {e.path: e for e in entries}


def test_lists_each_kind_with_mode_owner_size_and_content(fs: Path) -> None:
    got = by_path(filesystem_contents(fs))
    assert got["/"] == Entry("/", "d", 0o755, 0, 0, None)
    assert got["/etc/hostname"] == Entry("/etc/hostname", "f", 0o644, 0, 0, 4, sha(b"pyd\n"))
    su = got["/usr/bin/su"]
    assert (su.kind, su.mode, su.size, su.content) == ("f", 0o4755, 7, sha(b"\x7fELF su"))
    assert got["/usr/bin/su-link"].content == su.content
    assert got["/usr/bin/with space"].content == sha(b"")
    assert got["/bin"] == Entry("/bin", "l", 0o777, 0, 0, 7, "usr/bin")
    assert got["/long"].content == LONG and got["/long"].size == len(LONG)
    assert got["/fifo"].kind == "p"
    assert got["/lost+found"].kind == "d"
    if ROOT:
        assert su.gid == 5
        assert got["/null"] == Entry("/null", "c", 0o666, 0, 0, 0, "1:3")
    assert list(got) == sorted(got)


def test_same_tree_in_another_order_gives_the_same_listing(tmp_path: Path, fs: Path) -> None:
    make_tree(tmp_path / "other", reverse=True)
    other = make_fs(tmp_path / "other", tmp_path / "other.raw")
    assert fs.read_bytes() != other.read_bytes()  # inode order differs: bytes are no test
    assert render(filesystem_contents(fs)) == render(filesystem_contents(other))


def test_a_changed_byte_or_mode_is_named(tmp_path: Path, fs: Path) -> None:
    make_tree(tmp_path / "other")
    (tmp_path / "other" / "etc" / "hostname").write_text("pyE\n")
    (tmp_path / "other" / "usr" / "bin" / "with space").chmod(0o600)
    (tmp_path / "other" / "etc" / "extra").write_text("")
    other = make_fs(tmp_path / "other", tmp_path / "other.raw")
    diff = differences(filesystem_contents(fs), filesystem_contents(other))
    assert [d.split(":")[0] for d in diff] == ["/etc/extra", "/etc/hostname", "/usr/bin/with space"]
    assert diff[0].startswith("/etc/extra: - (absent) / +f 0644")


def test_reads_a_qcow2(tmp_path: Path, fs: Path) -> None:
    qcow2 = tmp_path / "rootfs.qcow2"
    subprocess.run(["qemu-img", "convert", "-c", "-O", "qcow2", str(fs), str(qcow2)], check=True)
    assert rootfs_contents(qcow2) == filesystem_contents(fs)


def test_not_a_filesystem_is_an_image_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(ImageError, match="debugfs could not read"):
        filesystem_contents(junk)
    with pytest.raises(ImageError, match="could not unpack") as e:
        rootfs_contents(tmp_path / "missing.qcow2")
    assert "pyd image verify" in e.value.hint


def test_missing_debugfs_says_which_package(monkeypatch: pytest.MonkeyPatch, fs: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(EnvironmentProblem) as e:
        filesystem_contents(fs)
    assert "e2fsprogs" in e.value.hint


def test_parse_ls_skips_dot_entries_and_unused_slots() -> None:
    text = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/0/000000/0/0//0/\n/12/100644/1/2/a b/3/\n"
    assert parse_ls(text) == [contents.DirEntry(12, 0o100644, 1, 2, "a b", 3)]
    with pytest.raises(ImageError, match="unexpected directory line"):
        parse_ls("/12/100644/1/2/a/3\n")


def test_device_numbers_old_and_new_style() -> None:
    assert contents.device_number("Device major/minor number: 01:03 (hex 01:03)") == "1:3"
    new = "(New-style) Device major/minor number: 300:70000 (hex 12c:11170)"
    assert contents.device_number(new) == "300:70000"
    with pytest.raises(ImageError, match="no device number"):
        contents.device_number("Inode: 12")


def test_split_batch_by_command() -> None:
    out = "debugfs: ls -p <2>\n/a\n\ndebugfs: ls -p <12>\n/b\n"
    assert split_batch(out) == {"ls -p <2>": "/a\n", "ls -p <12>": "/b"}


def test_differences_stop_at_the_limit() -> None:
    a = [Entry(f"/f{i}", "f", 0o644, 0, 0, 1, "x") for i in range(5)]
    b = [Entry(f"/f{i}", "f", 0o644, 0, 0, 1, "y") for i in range(5)]
    assert len(differences(a, b, limit=3)) == 3
    assert differences(a, a) == []
