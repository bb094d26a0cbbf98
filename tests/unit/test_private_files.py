"""Instance files are the owner's alone: directories 0700, files 0600, from the start and
for an instance an older pyd left readable (issue 13, item 2)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from pyd.config.settings import with_value
from pyd.config.store import edit_config
from pyd.host.atomicfile import write_atomic
from pyd.host.private_files import instance_dir, make_private, write_private_text
from pyd.instance.disks import create_data_disk
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.instance.registry import instance
from pyd.instance.state import InstanceState, save_state
from pyd.lifecycle.locking import locked
from tests.unit.fakebackend import RecordingProgress

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture(autouse=True)
def _open_umask() -> object:
    """The usual umask, under which a file made without care is 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_pyd_home_it_creates_and_every_instance_directory_are_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "made-by-pyd" / "home"
    monkeypatch.setenv("PYD_HOME", str(home))
    inst = instance("dev")
    with locked(inst, RecordingProgress()):
        edit_config(inst.files.config, lambda c: with_value(c, "cpus", "2"))
    assert _mode(home) == 0o700
    assert _mode(home / "instances") == 0o700
    assert _mode(inst.files.root) == 0o700
    assert _mode(inst.files.config) == 0o600
    assert _mode(inst.files.start_lock) == 0o600
    assert _mode(Path(str(inst.files.config) + ".lock")) == 0o600


def test_a_pyd_home_the_user_made_keeps_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "mine"
    home.mkdir(mode=0o755)
    instance_dir(home / "instances" / "dev")
    assert _mode(home) == 0o755
    assert _mode(home / "instances") == 0o700
    assert _mode(home / "instances" / "dev") == 0o700


def test_files_pyd_writes_in_an_instance_are_0600(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "instances" / "dev")
    instance_dir(files.root)
    instance_keys(files)
    save_state(files.state, InstanceState(2222, "k", "tcg"))
    write_atomic(files.agent_status, "{}")
    write_private_text(files.agent_pid, "1\n")
    written = [
        files.client_key,
        files.client_key.with_name("id_ed25519.pub"),
        files.host_key,
        files.host_key.with_name("host_ed25519.pub"),
        files.state,
        files.agent_status,
        files.agent_pid,
    ]
    assert {p.name: _mode(p) for p in written} == {p.name: 0o600 for p in written}
    assert _mode(files.client_key.parent) == 0o700


def test_a_new_data_disk_is_0600(tmp_path: Path) -> None:
    disk = tmp_path / "data.qcow2"
    create_data_disk(disk, 1)
    assert _mode(disk) == 0o600


def test_write_private_text_closes_an_existing_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.pid"
    path.write_text("old")
    path.chmod(0o644)
    write_private_text(path, "new")
    assert (path.read_text(), _mode(path)) == ("new", 0o600)


def test_an_instance_an_older_pyd_left_readable_is_made_private(tmp_path: Path) -> None:
    root = tmp_path / "dev"
    (root / "ssh").mkdir(parents=True, mode=0o755)
    (root / "sock").mkdir(mode=0o755)
    for name in ("data.qcow2", "os.qcow2", "agent.log", "config.toml", "ssh/id_ed25519.pub"):
        (root / name).write_text("x")
        (root / name).chmod(0o644)
    outside = tmp_path / "not-the-instance"
    outside.write_text("x")
    outside.chmod(0o644)
    (root / "link").symlink_to(outside)
    root.chmod(0o755)
    make_private(root)
    modes = {str(p.relative_to(root)): _mode(p) for p in root.rglob("*") if not p.is_symlink()}
    assert modes == {
        "ssh": 0o700,
        "sock": 0o700,
        "data.qcow2": 0o600,
        "os.qcow2": 0o600,
        "agent.log": 0o600,
        "config.toml": 0o600,
        "ssh/id_ed25519.pub": 0o600,
    }
    assert _mode(root) == 0o700
    assert _mode(outside) == 0o644  # a link is not followed out of the instance
