"""The tray's cheap look at the instances (pyd/tray/poll.py): a fingerprint of the status
files that changes exactly when one is written, made or removed; the states read through
the real `pyd list --json`. And its icons: one colour per kind."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from pyd.agent.status_file import AgentState, AgentStatus, write_status
from pyd.errors import PydError
from pyd.instance.files import InstanceFiles
from pyd.lifecycle.run_state import RunState
from pyd.tray.icons import COLOURS, SIZE, draw_icon
from pyd.tray.model import IconKind, InstanceView
from pyd.tray.poll import fingerprint, parse_list, read_views


def test_fingerprint_changes_with_each_status_file(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    inst = root / "dev"
    inst.mkdir(parents=True)
    (inst / "os.qcow2").write_bytes(b"disk")
    first = fingerprint(root)
    assert fingerprint(root) == first  # nothing changed, nothing to read
    (inst / "os.qcow2").write_bytes(b"disk grew")  # not a status file
    assert fingerprint(root) == first
    keeper = inst / "keeper.json"
    keeper.write_text('{"restarts": 0}')
    second = fingerprint(root)
    assert second != first
    # Same size, a later write: the mtime tells it.
    os.utime(keeper, ns=(0, keeper.stat().st_mtime_ns + 1_000_000))
    assert fingerprint(root) != second
    (inst / "suspend.save").write_bytes(b"")
    third = fingerprint(root)
    (inst / "suspend.save").unlink()
    assert fingerprint(root) != third


def test_the_agents_status_counts_only_for_what_a_state_comes_from(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    (root / "dev").mkdir(parents=True)
    path = root / "dev" / "agent.json"
    status = AgentStatus(AgentState.READY, pid=42)
    write_status(path, status)
    ready = fingerprint(root)
    # Rewritten for the data disk's use, ports, platforms: the same state, no read.
    write_status(path, replace(status, data_disk="12 %", platforms=("linux/amd64",)))
    assert fingerprint(root) == ready
    write_status(path, status.to(AgentState.RECONNECTING, "the link dropped"))
    assert fingerprint(root) != ready
    path.write_text("{half a file")
    assert fingerprint(root) != ready
    path.unlink()
    assert fingerprint(root) == fingerprint(root) != ready


def test_fingerprint_sees_an_instance_made(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    assert fingerprint(root) == ()  # no instances directory yet
    root.mkdir()
    empty = fingerprint(root)
    (root / "new").mkdir()
    (root / "new" / "config.toml").write_text("")
    assert fingerprint(root) != empty


def test_pyd_list_is_read_as_views_unknown_states_as_unknown() -> None:
    text = json.dumps(
        [
            {"name": "default", "state": "running", "error": ""},
            {"name": "dev", "state": "failed", "error": "the VM died"},
            {"name": "new", "state": "hibernating", "error": None},  # a later pyd's state
        ]
    )
    assert parse_list(text) == [
        InstanceView("default", RunState.RUNNING),
        InstanceView("dev", RunState.FAILED, "the VM died"),
        InstanceView("new", RunState.UNKNOWN),
    ]


def test_a_damaged_instance_reads_broken_through_the_real_pyd_list(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "instances" / "dev")
    files.root.mkdir(parents=True)
    files.config.write_text("cpus = \n")  # not TOML
    views = read_views(sys.executable, {**os.environ, "PYD_HOME": str(tmp_path)})
    assert [(v.name, v.state) for v in views] == [("dev", RunState.BROKEN)]
    assert "config" in views[0].error


def test_a_failing_pyd_list_is_an_error_with_its_words(tmp_path: Path) -> None:
    python = tmp_path / "python"  # stands in for the interpreter: `-m pyd list` fails
    python.write_text("#!/bin/sh\necho 'libvirtd does not answer' >&2\nexit 3\n")
    python.chmod(0o755)
    with pytest.raises(PydError, match=r"\(exit 3\): libvirtd does not answer"):
        read_views(str(python), dict(os.environ))
    python.write_text("#!/bin/sh\necho '{not json'\n")
    with pytest.raises(PydError, match="unexpected"):
        read_views(str(python), dict(os.environ))


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
