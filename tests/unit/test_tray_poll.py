"""The tray's cheap look at the instances (pyd/tray/poll.py): a fingerprint of the status
files that changes exactly when one is written, made or removed; a damaged instance is listed
broken. And its icons: one colour per kind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from pyd.instance.files import InstanceFiles
from pyd.instance.registry import Instance
from pyd.lifecycle.status import RunState
from pyd.tray.icons import COLOURS, SIZE, draw_icon
from pyd.tray.model import IconKind
from pyd.tray.poll import fingerprint, view_of


def test_fingerprint_changes_with_each_status_file(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    inst = root / "dev"
    inst.mkdir(parents=True)
    (inst / "os.qcow2").write_bytes(b"disk")
    first = fingerprint(root)
    assert fingerprint(root) == first  # nothing changed, nothing to read
    (inst / "os.qcow2").write_bytes(b"disk grew")  # not a status file
    assert fingerprint(root) == first
    status = inst / "agent.json"
    status.write_text('{"state": "starting"}')
    second = fingerprint(root)
    assert second != first
    # Same size, a later write: the mtime tells it.
    os.utime(status, ns=(0, status.stat().st_mtime_ns + 1_000_000))
    assert fingerprint(root) != second
    (inst / "suspend.save").write_bytes(b"")
    third = fingerprint(root)
    (inst / "suspend.save").unlink()
    assert fingerprint(root) != third


def test_fingerprint_sees_an_instance_made(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    assert fingerprint(root) == ()  # no instances directory yet
    root.mkdir()
    empty = fingerprint(root)
    (root / "new").mkdir()
    (root / "new" / "config.toml").write_text("")
    assert fingerprint(root) != empty


def test_a_damaged_instance_is_listed_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_HOME", str(tmp_path))
    files = InstanceFiles(tmp_path / "instances" / "dev")
    files.root.mkdir(parents=True)
    files.config.write_text("cpus = \n")  # not TOML
    view = view_of(Instance("dev", files))
    assert view.state is RunState.BROKEN and view.error


def _rgba(image: Image.Image, at: tuple[int, int]) -> tuple[int, ...]:
    pixel = image.getpixel(at)
    assert isinstance(pixel, tuple)
    return pixel


@pytest.mark.parametrize("kind", list(IconKind))
def test_each_icon_is_a_disc_of_its_kind_colour(kind: IconKind) -> None:
    image = draw_icon(kind)
    assert image.size == (SIZE, SIZE)
    assert _rgba(image, (8, SIZE // 2))[:3] == COLOURS[kind]  # the disc, left of any mark
    assert _rgba(image, (0, 0))[3] == 0  # transparent corners


def test_the_kinds_have_distinct_colours_and_marks() -> None:
    assert len(set(COLOURS.values())) == len(IconKind)
    marks = {k: _rgba(draw_icon(k), (SIZE // 2, SIZE // 2)) for k in IconKind}
    assert marks[IconKind.RUNNING][:3] == COLOURS[IconKind.RUNNING]  # a plain disc
    assert marks[IconKind.STARTING][:3] == (255, 255, 255)  # a ring
