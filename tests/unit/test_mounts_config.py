"""The shares in an instance's config.toml: `[[mounts]]` tables, their default, their errors,
and rewrites that keep what the user wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pyd.config.settings import (
    InstanceConfig,
    parse_config,
    to_toml_dict,
    with_mount_added,
    with_mount_removed,
    with_value,
)
from pyd.config.store import load_config, platform_defaults, save_config
from pyd.errors import UsageError
from pyd.host.env import Host
from pyd.mounts.shares import Share, make_share

from .outcomes import refused

HOST = Host("linux", "/home/u")
WINDOWS = Host("win32", "C:\\Users\\u")
HOME = Share("/home/u", "/home/u", True)
ORIGIN = "/home/u/pyd/dev/config.toml"


def _parse(data: dict[str, Any], host: Host = HOST) -> InstanceConfig:
    return parse_config(data, ORIGIN, platform_defaults(host), host)


def _usage_error(data: dict[str, Any]) -> UsageError:
    e = refused(lambda: _parse(data))
    assert e.message.startswith(f"{ORIGIN}: ")
    return e


# --- reading --------------------------------------------------------------------------------


def test_without_mounts_the_home_directory_is_shared_writable() -> None:
    assert _parse({}).mounts == (HOME,)
    assert _parse({}, WINDOWS).mounts == (Share("C:\\Users\\u", "/c/Users/u", True),)


def test_an_empty_mounts_list_shares_nothing() -> None:
    assert _parse({"mounts": []}).mounts == ()


def test_mounts_tables_give_the_shares_in_file_order() -> None:
    data = {
        "mounts": [
            {"location": "~/src", "writable": False},
            {"location": "/data/", "mount_point": "/mnt/data"},
        ]
    }
    assert _parse(data).mounts == (
        Share("/home/u/src", "/home/u/src", False),
        Share("/data", "/mnt/data", True),
    )


def test_windows_locations_are_read_in_either_slash_and_translated() -> None:
    data = {"mounts": [{"location": "D:/work"}, {"location": "~\\src", "mount_point": "/src"}]}
    assert _parse(data, WINDOWS).mounts == (
        Share("D:\\work", "/d/work", True),
        Share("C:\\Users\\u\\src", "/src", True),
    )


@pytest.mark.parametrize(
    ("mounts", "expected", "hint"),
    [
        ("~", "mounts: expected a list of [[mounts]] tables, got a string '~'", "[[mounts]]"),
        ({"location": "~"}, "mounts: expected a list of [[mounts]] tables, got a table", "[["),
        (["~"], "mounts[0]: expected a table, got a string '~'", "location ="),
        ([{"writable": False}], "mounts[0].location: missing", "pyd mount add PATH"),
        ([{"location": 3}], "mounts[0].location: expected a path, got a number 3", ""),
        ([{"location": "src"}], "mounts[0].location: 'src' is not an absolute path", "/home"),
        ([{"location": "~bob"}], "mounts[0].location: '~bob': only ~ (your own home", "full"),
        ([{"location": "~", "path": "/x"}], "mounts[0]: unknown key 'path'", "mount_point"),
        (
            [{"location": "~", "writable": "yes"}],
            "mounts[0].writable: expected true or false, got a string 'yes'",
            "",
        ),
        (
            [{"location": "~/src", "mount_point": "/usr/src"}],
            "mounts[0].mount_point: mount point /usr/src is inside /usr",
            "e.g. /mnt/src",
        ),
        (
            [{"location": "~/src", "mount_point": "src"}],
            "mounts[0].mount_point: 'src' is not an absolute path",
            "",
        ),
        (
            [{"location": "/var/lib/app"}],
            "mounts[0].mount_point (by default location's path): mount point /var/lib/app is "
            "inside /var/lib",
            "e.g. /mnt/app",
        ),
        (
            [{"location": "~"}, {"location": "~/src"}],
            "mounts: /home/u/src is already in the guest, at /home/u/src, through the share "
            "of /home/u",
            "pyd mount rm /home/u",
        ),
        (
            [{"location": "~"}, {"location": "/data", "mount_point": "/home/u"}],
            "mounts: mount point /home/u is taken by the share of /home/u",
            "",
        ),
        (
            [{"location": "~"}, {"location": "~/", "mount_point": "/mnt/u"}],
            "mounts: /home/u is already shared",
            "shared once",
        ),
    ],
)
def test_bad_mounts_name_the_setting_and_the_entry(mounts: Any, expected: str, hint: str) -> None:
    e = _usage_error({"mounts": mounts})
    assert expected in e.message
    assert hint in e.hint and e.hint


def test_every_bad_share_is_named_at_once_with_the_other_settings() -> None:
    mounts = [{"location": "~"}, {"location": "rel"}, {"location": "/x", "writable": 1}]
    e = _usage_error({"mounts": mounts, "cpus": 0})
    assert "2 invalid settings" in e.message
    assert "mounts[1].location: 'rel' is not an absolute path" in e.message
    assert "mounts[2].writable: expected true or false" in e.message
    assert "mounts[0]" not in e.message and "cpus: must be" in e.message


def test_shares_at_nested_or_system_mount_points_are_refused_when_read() -> None:
    nested = [{"location": "~"}, {"location": "/srv", "mount_point": "/home/u/srv"}]
    e = _usage_error({"mounts": nested})
    assert "mounts: mount point /home/u/srv is inside /home/u" in e.message
    e = _usage_error({"mounts": [{"location": "/x", "mount_point": "/etc"}]})
    assert "mount point /etc is part of the guest's own system" in e.message


def test_config_set_refuses_the_shares_and_points_to_pyd_mount() -> None:
    e = refused(lambda: with_value(_parse({}), "mounts", "/src"))
    assert e.message == "mounts is not set as a whole"
    assert "pyd mount add PATH" in e.hint and "pyd mount ls" in e.hint


def test_to_toml_dict_writes_every_share_out_and_parses_back() -> None:
    cfg = with_mount_added(_parse({}), make_share("/data", HOST, "/mnt/data", writable=False))
    assert to_toml_dict(cfg)["mounts"] == [
        {"location": "/home/u", "mount_point": "/home/u", "writable": True},
        {"location": "/data", "mount_point": "/mnt/data", "writable": False},
    ]
    assert _parse(to_toml_dict(cfg)) == cfg


def test_mount_add_and_rm_on_the_config() -> None:
    cfg = with_mount_added(_parse({}), make_share("/data", HOST))
    assert cfg.mounts == (HOME, Share("/data", "/data", True))
    assert with_mount_removed(cfg, "/home/u", "/home/u").mounts == (Share("/data", "/data", True),)
    e = refused(lambda: with_mount_added(cfg, make_share("~/x", HOST)))
    assert "/home/u/x is already in the guest" in e.message


# --- the file -------------------------------------------------------------------------------


def test_a_file_without_mounts_keeps_following_the_home_directory(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("cpus = 3\n")
    save_config(path, with_value(load_config(path, HOST), "cpus", "4"), HOST)
    assert "mounts" not in path.read_text()
    elsewhere = Host("darwin", "/Users/u")
    assert load_config(path, elsewhere).mounts == (Share("/Users/u", "/Users/u", True),)


_FILE = """\
cpus = 3  # small

# the projects
[[mounts]]
location = "~/src"  # all of them
writable = true

# the big disk
[[mounts]]
location = "/data"
mount_point = "/mnt/data"
# writable = false

# LAN access
[ports]
bind = "docker"
"""


def test_adding_a_share_appends_a_table_and_keeps_the_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_FILE)
    cfg = with_mount_added(load_config(path, HOST), make_share("/srv/www", HOST, writable=False))
    save_config(path, cfg, HOST)
    text = path.read_text()
    assert text.startswith("cpus = 3  # small\n")
    assert '# the projects\n[[mounts]]\nlocation = "~/src"  # all of them\n' in text
    assert '# the big disk\n[[mounts]]\nlocation = "/data"\nmount_point = "/mnt/data"\n' in text
    assert (
        '# writable = false\n\n[[mounts]]\nlocation = "/srv/www"\nwritable = false\n\n'
        "# LAN access\n[ports]\n"
    ) in text
    assert load_config(path, HOST) == cfg


def test_removing_a_share_takes_its_comments_and_leaves_the_others(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_FILE)
    save_config(path, with_mount_removed(load_config(path, HOST), "/home/u/src", None), HOST)
    text = path.read_text()
    assert "the projects" not in text and "~/src" not in text and "all of them" not in text
    assert '# the big disk\n[[mounts]]\nlocation = "/data"\n' in text
    assert "# writable = false\n\n# LAN access\n[ports]\n" in text
    assert load_config(path, HOST).mounts == (Share("/data", "/mnt/data", True),)

    save_config(path, with_mount_removed(load_config(path, HOST), "/mnt/data", None), HOST)
    text = path.read_text()
    assert "big disk" not in text and "[[mounts]]" not in text
    assert 'cpus = 3  # small\nmemory = "2GiB"\n' in text
    assert 'libvirt_uri = ""\nmounts = []\n\n# LAN access\n[ports]\n' in text
    assert load_config(path, HOST).mounts == ()


def test_a_share_added_after_none_becomes_the_first_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('mounts = []  # nothing for now\n\n[ports]\nbind = "docker"\n')
    cfg = with_mount_added(load_config(path, HOST), make_share("~/src", HOST))
    save_config(path, cfg, HOST)
    text = path.read_text()
    assert "mounts = []" not in text
    assert text.endswith('\n\n[[mounts]]\nlocation = "/home/u/src"\nwritable = true\n')
    assert load_config(path, HOST) == cfg


def test_a_one_line_mounts_list_stays_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('mounts = [{ location = "~" }]  # just home\n')
    cfg = with_mount_added(load_config(path, HOST), make_share("/data", HOST, "/mnt/data"))
    save_config(path, cfg, HOST)
    first = path.read_text().splitlines()[0]
    assert first.startswith('mounts = [{location = "/home/u", writable = true}, {location =')
    assert first.endswith("]  # just home")
    assert load_config(path, HOST) == cfg


def test_windows_shares_are_written_so_that_they_read_back(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    cfg = load_config(path, WINDOWS)
    cfg = with_mount_added(cfg, make_share("D:\\work", WINDOWS, writable=False))
    save_config(path, cfg, WINDOWS)
    assert '[[mounts]]\nlocation = "D:\\\\work"\nwritable = false\n' in path.read_text()
    assert load_config(path, WINDOWS) == cfg
