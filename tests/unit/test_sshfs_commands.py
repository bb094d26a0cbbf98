"""The guest commands of a share, run by a real shell against files made here."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyd.mounts.binds import binds_on, under
from pyd.mounts.sshfs import mount_command, sshfs_options, unmount_command, wait_mounted_command

SSHFS_LINE = "61 24 0:52 / {mp} rw,nosuid,nodev,relatime shared:33 - fuse.sshfs :{mp} rw\n"
OTHER_LINE = "24 1 253:0 / {mp} rw,relatime shared:1 - ext4 /dev/vda rw\n"


def _sh(command: str) -> int:
    return subprocess.run(["sh", "-c", command], capture_output=True).returncode


def test_options_add_ro_only_for_read_only_shares() -> None:
    assert sshfs_options(True) == "allow_other,no_contain_symlinks"
    assert sshfs_options(False) == "allow_other,no_contain_symlinks,ro"
    assert sshfs_options(True, ("cache=no",)) == "allow_other,no_contain_symlinks,cache=no"


def test_mount_command_quotes_paths_with_spaces_and_quotes() -> None:
    cmd = mount_command("/home/me/it's here", "/home/me/it's here", writable=False)
    # The shell sees exactly the arguments we meant: echo them instead of running sshfs.
    out = subprocess.run(
        ["sh", "-c", cmd.replace("exec sshfs", "printf '%s\\n'").replace(
            "fusermount3", "true").replace("mkdir -p", "true")],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    options = "slave,allow_other,no_contain_symlinks,ro"
    assert out == [":/home/me/it's here", "/home/me/it's here", "-o", options]


def test_wait_mounted_sees_only_an_sshfs_mount_at_that_exact_path(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    mp = "/home/me/a dir"
    escaped = "/home/me/a\\040dir"
    info.write_text(OTHER_LINE.format(mp=escaped) + SSHFS_LINE.format(mp="/home/me/a"))
    assert _sh(wait_mounted_command(mp, 0.2, str(info))) == 1  # ext4 there; sshfs elsewhere
    info.write_text(SSHFS_LINE.format(mp=escaped))
    assert _sh(wait_mounted_command(mp, 0.2, str(info))) == 0
    assert _sh(wait_mounted_command("/home/me/a", 0.2, str(info))) == 1


def test_unmount_command_succeeds_when_nothing_is_mounted() -> None:
    assert _sh(unmount_command("/nonexistent/pyd-test")) == 0


def test_under_compares_whole_path_components() -> None:
    assert under("/home/me", "/home/me")
    assert under("/home/me/src/", "/home/me")
    assert not under("/home/meme", "/home/me")
    assert under("/x/y", "/")


def test_binds_on_lists_running_containers_bind_mounting_from_the_shares() -> None:
    containers = [
        {"Names": ["/web"], "State": "running", "Mounts": [
            {"Type": "bind", "Source": "/home/me/src", "Destination": "/src"},
            {"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data"},
            {"Type": "bind", "Source": "/etc/hosts"},
        ]},
        {"Names": ["/old"], "State": "exited", "Mounts": [
            {"Type": "bind", "Source": "/home/me/x"},
        ]},
        {"Id": "0123456789abcdef", "State": "running", "Mounts": [
            {"Type": "bind", "Source": "/data/y"},
        ]},
    ]  # fmt: skip
    assert binds_on(containers, ["/home/me", "/data"]) == [
        ("web", "/home/me/src", "/home/me"),
        ("0123456789ab", "/data/y", "/data"),
    ]
    assert binds_on(containers, []) == []
