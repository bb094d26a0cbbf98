"""The image tools find qemu-img where the instance disks do (pyd.image.qemu_img): listing an
image without it is an EnvironmentProblem with the install command, publishing without it
packs the qcow2 as it is, and a qemu-img off PATH but where QEMU lives is used."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from pyd.errors import EnvironmentProblem
from pyd.image import qemu_img
from pyd.image.contents import rootfs_contents


def test_listing_an_image_without_qemu_img_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not qemu_img.available()
    with pytest.raises(EnvironmentProblem, match="qemu-img is not installed") as e:
        rootfs_contents(tmp_path / "rootfs.qcow2")
    assert e.value.hint == "install QEMU: sudo apt-get install qemu-utils"


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX stand-in")
def test_the_runner_uses_the_qemu_img_it_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in = tmp_path / "bin" / "qemu-img"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\necho "ran with $*"\nexit 3\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(stand_in.parent))
    assert qemu_img.available()
    done = qemu_img.run_qemu_img("info", "x.qcow2")
    assert (done.returncode, done.stdout) == (3, "ran with info x.qcow2\n")
