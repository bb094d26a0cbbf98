"""An instance's disks (instance/disks.py): qemu-img is found where QEMU is
(config.qemu_install, whose per-OS order test_qemu_binary covers for linux, darwin and win32),
a missing one is an EnvironmentProblem with the install command, and a failing one says why."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

import pytest

from pyd.errors import EnvironmentProblem, PydError
from pyd.instance.disks import create_data_disk, disk_size_gib


def test_no_qemu_img_is_an_environment_problem_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = r"qemu-img is not installed \(looked in: PATH\)"
    with pytest.raises(EnvironmentProblem, match=missing) as e:
        create_data_disk(tmp_path / "data.qcow2", 1)
    assert e.value.hint == "install QEMU: sudo apt-get install qemu-utils"
    assert not (tmp_path / "data.qcow2").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX stand-in")
def test_a_failing_qemu_img_says_what_it_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in = tmp_path / "bin" / "qemu-img"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\necho 'Could not create: No space left on device' >&2\nexit 1\n")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(stand_in.parent))
    with pytest.raises(PydError, match="qemu-img create failed: Could not create: No space"):
        create_data_disk(tmp_path / "data.qcow2", 1)


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_data_disk_is_private_and_has_its_size(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    create_data_disk(disk, 3)
    assert disk_size_gib(disk) == 3 and stat.S_IMODE(disk.stat().st_mode) == 0o600
    with pytest.raises(PydError, match="refusing to overwrite"):
        create_data_disk(disk, 3)
