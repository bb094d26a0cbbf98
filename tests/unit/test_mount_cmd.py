"""`pyd mount add|ls|rm` on an instance that is not started: the shares kept in config.toml,
what a running agent reports, and the messages for what cannot be shared. No VM and no agent
are started; HOME points into a temporary directory, so the default share is known."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from pyd.agent.status_file import AgentState, AgentStatus, write_status
from pyd.cli.mount_cmd import REMOVED, mount_listing, mount_rows
from pyd.config.store import load_config
from pyd.host.env import Host
from pyd.instance.files import InstanceFiles
from pyd.mounts.shares import Share
from pyd.mounts.state import MountState, MountStatus

from .outcomes import ok, run_pyd, usage


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """The user's home directory, with a project and a file in it."""
    home = tmp_path / "home" / "me"
    (home / "src").mkdir(parents=True)
    (home / "notes.txt").write_text("x")
    (tmp_path / "data").mkdir()
    return home


def _pyd(root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        "PYD_HOME": str(root / "pyd"),
        "HOME": str(root / "home" / "me"),
        "DOCKER_CONFIG": str(root / "docker"),
    }
    return run_pyd(env, *args, cwd=cwd)


@pytest.fixture
def root(tmp_path: Path, user: Path) -> Path:
    """PYD_HOME and HOME below tmp_path, with a stopped instance "dev" (a config file, as
    `pyd config set` leaves it)."""
    ok(_pyd(tmp_path, "config", "set", "--create", "cpus", "2", "-n", "dev"))
    return tmp_path


def _files(root: Path) -> InstanceFiles:
    return InstanceFiles(root / "pyd" / "instances" / "dev")


def _host(root: Path) -> Host:
    return Host(sys.platform, str(root / "home" / "me"))


def _table(stdout: str) -> list[list[str]]:
    """The cells of each line: columns are two or more spaces apart, a cell holds single ones."""
    return [re.split(r" {2,}", line.strip()) for line in stdout.splitlines()]


def test_a_new_instance_shares_the_home_directory(root: Path) -> None:
    home = str(root / "home" / "me")
    r = _pyd(root, "mount", "ls", "-n", "dev")
    assert _table(ok(r)) == [
        ["LOCATION", "MOUNT POINT", "MODE", "STATE", "DETAIL"],
        [home, home, "writable", "stopped"],
    ]
    assert "'dev' is not running (no host agent): its shares are mounted while it runs" in r.stderr
    # The default is not written into the file: it follows the home directory.
    assert "mounts" not in _files(root).config.read_text()


def test_add_ls_rm_round_trip_through_the_config_file(root: Path) -> None:
    data = str(root / "data")
    r = _pyd(root, "mount", "add", data, "--ro", "--mount-point", "/mnt/data", "-n", "dev")
    ok(r)
    assert f"added {data} (at /mnt/data in the guest, read-only); applies at the next start" in (
        r.stderr
    )
    config = _files(root).config
    shares = load_config(config, _host(root)).mounts
    assert shares[-1] == Share(data, "/mnt/data", False)
    assert "[[mounts]]" in config.read_text()

    listed = json.loads(ok(_pyd(root, "mount", "ls", "--json", "-n", "dev")))
    assert listed[-1] == {
        "location": data,
        "mount_point": "/mnt/data",
        "writable": False,
        "state": "stopped",
        "detail": "",
    }

    r = _pyd(root, "mount", "rm", "/mnt/data", "-n", "dev")
    ok(r)
    assert f"removed {data} (at /mnt/data); applies at the next start" in r.stderr
    assert load_config(config, _host(root)).mounts == shares[:-1]


def test_a_relative_path_is_shared_by_its_absolute_path_at_the_same_place(root: Path) -> None:
    ok(_pyd(root, "mount", "add", "data", "-n", "dev", cwd=root))
    data = str(root / "data")
    assert load_config(_files(root).config, _host(root)).mounts[-1] == Share(data, data, True)
    ok(_pyd(root, "mount", "rm", ".", "-n", "dev", cwd=root / "data"))  # by host directory
    assert data not in _files(root).config.read_text()


def test_removing_every_share_writes_an_empty_list(root: Path) -> None:
    ok(_pyd(root, "mount", "rm", str(root / "home" / "me"), "-n", "dev"))
    assert "mounts = []" in _files(root).config.read_text()
    assert _table(ok(_pyd(root, "mount", "ls", "-n", "dev"))) == [
        ["LOCATION", "MOUNT POINT", "MODE", "STATE", "DETAIL"]
    ]
    err = usage(_pyd(root, "mount", "rm", "/x", "-n", "dev"))
    assert "no share matches '/x': there are none" in err and "pyd mount add PATH" in err


def test_what_cannot_be_shared_is_a_usage_error_and_leaves_the_file_alone(root: Path) -> None:
    home = root / "home" / "me"
    config = _files(root).config
    config.write_text("# mine\n" + config.read_text())
    before = config.read_text()
    for args, expected, hint in (
        (("nope",), "'nope' (", "give a directory on this machine"),
        ((str(home / "notes.txt"),), "is not a directory", f"pyd mount add {home}"),
        (
            (str(home / "src"),),
            f"{home / 'src'} is already in the guest, at {home / 'src'}, through the share",
            f"pyd mount rm {home}` first",
        ),
        ((str(home),), f"{home} is already shared", "pyd mount ls"),
        (
            (str(root / "data"), "--mount-point", "/usr/data"),
            "mount point /usr/data is inside /usr",
            "e.g. /mnt/data",
        ),
        (
            (str(root / "data"), "--mount-point", str(home / "data")),
            f"mount point {home / 'data'} is inside {home}",
            "nested shares are refused",
        ),
        (
            ("/usr",),
            "mount point /usr is part of the guest's own system (a share's mount point",
            "--mount-point /mnt/usr",
        ),
    ):
        err = usage(_pyd(root, "mount", "add", *args, "-n", "dev"))
        assert expected in err and hint in err, err
    err = usage(_pyd(root, "mount", "rm", "/srv", "-n", "dev"))
    assert "no share matches '/srv'" in err and f"{home} (at {home}, writable)" in err
    assert config.read_text() == before


def test_a_broken_config_is_reported_and_never_rewritten(root: Path) -> None:
    config = _files(root).config
    config.write_text('[[mounts]]\nlocation = "relative/dir"  # typo\n')
    before = config.read_text()
    for args in (("add", str(root / "data")), ("rm", "/x"), ("ls",)):
        err = usage(_pyd(root, "mount", *args, "-n", "dev"))
        assert "mounts[0].location: 'relative/dir' is not an absolute path" in err
        assert str(config) in err
    assert config.read_text() == before


def test_mount_commands_on_a_missing_instance_say_how_to_create_it(tmp_path: Path) -> None:
    (tmp_path / "home" / "me").mkdir(parents=True)
    for args in (("add", str(tmp_path)), ("ls",), ("rm", "/x")):
        err = usage(_pyd(tmp_path, "mount", *args, "-n", "ghost"))
        assert "there is no instance named 'ghost'" in err and "pyd start -n ghost" in err
    assert not (tmp_path / "pyd" / "instances" / "ghost").exists()


def test_config_show_lists_the_shares(root: Path) -> None:
    ok(_pyd(root, "mount", "add", str(root / "data"), "--ro", "-n", "dev"))
    shown = json.loads(ok(_pyd(root, "config", "show", "--json", "-n", "dev")))["mounts"]
    home = str(root / "home" / "me")
    data = str(root / "data")
    assert shown == [
        {"location": home, "mount_point": home, "writable": True},
        {"location": data, "mount_point": data, "writable": False},
    ]
    text = ok(_pyd(root, "config", "show", "-n", "dev"))
    assert f'[[mounts]]\nlocation = "{data}"\nmount_point = "{data}"\nwritable = false\n' in text
    err = usage(_pyd(root, "config", "set", "mounts", data, "-n", "dev"))
    assert "mounts is not set as a whole" in err and "pyd mount add PATH" in err


@pytest.fixture
def agent_lock(root: Path) -> Iterator[None]:
    """Holds agent.lock as a live agent does, so `pyd` takes the agent to be running."""
    with FileLock(_files(root).agent_lock):
        yield


def test_with_the_agent_running_ls_shows_its_report_and_changes_are_live(
    root: Path, agent_lock: None
) -> None:
    home = str(root / "home" / "me")
    data = str(root / "data")
    ok(_pyd(root, "mount", "add", data, "--mount-point", "/mnt/data", "-n", "dev"))
    mounts = (
        MountStatus(home, home, True, MountState.MOUNTED),
        # removed from config.toml a moment ago
        MountStatus("/old", "/old", True, MountState.MOUNTED),
    )
    write_status(_files(root).agent_status, AgentStatus(AgentState.READY, pid=1, mounts=mounts))
    rows = _table(ok(_pyd(root, "mount", "ls", "-n", "dev")))
    assert rows[1:] == [
        [home, home, "writable", "mounted"],
        [data, "/mnt/data", "writable", "unknown", "the host agent has not reported on it yet"],
        ["/old", "/old", "writable", "mounted", REMOVED],
    ]

    r = _pyd(root, "mount", "rm", "/mnt/data", "-n", "dev")
    assert "applied to the running instance (`pyd mount ls` shows its state)" in ok(r) + r.stderr


def test_ls_of_a_stopped_instance_ignores_the_last_agent_status(root: Path) -> None:
    home = str(root / "home" / "me")
    stale = (
        MountStatus(home, home, True, MountState.MOUNTED),
        MountStatus("/gone", "/gone", True, MountState.MOUNTED),
    )
    write_status(_files(root).agent_status, AgentStatus(AgentState.READY, pid=1, mounts=stale))
    (row,) = json.loads(ok(_pyd(root, "mount", "ls", "--json", "-n", "dev")))
    assert (row["location"], row["state"]) == (home, "stopped")


# --- the listing, without a process ---------------------------------------------------------

SRC = Share("/home/me/src", "/home/me/src", True)
DATA = Share("/data", "/mnt/data", False)


def test_every_configured_share_is_listed_in_file_order_with_the_reported_state() -> None:
    reported = (
        MountStatus("/data", "/mnt/data", False, MountState.FAILED, "sshfs exited with status 1"),
        MountStatus("/home/me/src", "/home/me/src", True, MountState.MOUNTED),
    )
    assert mount_listing((SRC, DATA), reported, MountState.UNKNOWN, "not yet") == [
        MountStatus("/home/me/src", "/home/me/src", True, MountState.MOUNTED),
        MountStatus("/data", "/mnt/data", False, MountState.FAILED, "sshfs exited with status 1"),
    ]


def test_a_share_changed_in_the_file_is_not_taken_for_the_reported_one() -> None:
    # Made read-only in config.toml: the agent still reports the writable mount it holds.
    reported = (MountStatus("/data", "/mnt/data", True, MountState.MOUNTED),)
    assert mount_listing((DATA,), reported, MountState.UNKNOWN, "not yet") == [
        MountStatus("/data", "/mnt/data", False, MountState.UNKNOWN, "not yet"),
        MountStatus("/data", "/mnt/data", True, MountState.MOUNTED, REMOVED),
    ]


def test_without_a_report_every_share_gets_the_given_state() -> None:
    assert mount_listing((SRC, DATA), None, MountState.STOPPED) == [
        MountStatus("/home/me/src", "/home/me/src", True, MountState.STOPPED),
        MountStatus("/data", "/mnt/data", False, MountState.STOPPED),
    ]


def test_mount_rows_put_each_share_under_the_columns() -> None:
    mounts = [
        MountStatus("C:\\Users\\me", "/c/Users/me", True, MountState.MOUNTED),
        MountStatus("/data", "/mnt/data", False, MountState.FAILED, "permission denied"),
    ]
    assert mount_rows(mounts) == [
        ["LOCATION", "MOUNT POINT", "MODE", "STATE", "DETAIL"],
        ["C:\\Users\\me", "/c/Users/me", "writable", "mounted", ""],
        ["/data", "/mnt/data", "read-only", "failed", "permission denied"],
    ]
