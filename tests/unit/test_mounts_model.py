"""Shares as values: where a host directory appears in the guest, and which shares can stand
together."""

from __future__ import annotations

import dataclasses

import pytest

from pyd.errors import UsageError
from pyd.host.env import Host
from pyd.mounts.shares import (
    Share,
    check_mount_point,
    default_shares,
    host_location,
    make_share,
    with_share_added,
    with_share_removed,
)

from .outcomes import refused

LINUX = Host(platform="linux", home="/home/me")
MAC = Host(platform="darwin", home="/Users/me")
WINDOWS = Host(platform="win32", home="C:\\Users\\me")


# --- one share ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "location", "share"),
    [
        (LINUX, "/home/me/src", Share("/home/me/src", "/home/me/src", True)),
        (LINUX, "/srv//data/", Share("/srv/data", "/srv/data", True)),
        (MAC, "/Users/me/src", Share("/Users/me/src", "/Users/me/src", True)),
        (MAC, "/var/folders/xy/T", Share("/var/folders/xy/T", "/var/folders/xy/T", True)),
        (WINDOWS, "C:\\Users\\me\\src", Share("C:\\Users\\me\\src", "/c/Users/me/src", True)),
        (WINDOWS, "d:/data", Share("D:\\data", "/d/data", True)),
    ],
)
def test_a_share_is_seen_at_its_own_path_by_default(
    host: Host, location: str, share: Share
) -> None:
    assert make_share(location, host) == share


def test_a_share_may_be_read_only_and_mounted_elsewhere() -> None:
    assert make_share("/home/me/src", LINUX, "/src/", writable=False) == Share(
        "/home/me/src", "/src", False
    )
    assert make_share("C:\\data", WINDOWS, "/data") == Share("C:\\data", "/data", True)


def test_tilde_is_the_home_directory_of_the_given_host() -> None:
    assert host_location("~", LINUX) == "/home/me"
    assert host_location("~/src", LINUX) == "/home/me/src"
    on_windows = [host_location(path, WINDOWS) for path in ("~", "~\\src", "~/src")]
    assert on_windows == ["C:\\Users\\me", "C:\\Users\\me\\src", "C:\\Users\\me\\src"]


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        (LINUX, "~other/src", "only ~ (your own home directory) is expanded"),
        (Host("linux", ""), "~/src", "the home directory is not known"),
        (LINUX, "src", "'src' is not an absolute path"),
        (WINDOWS, "src", "'src' is not an absolute Windows path"),
        (WINDOWS, "\\\\nas\\projects", "network (UNC)"),
        (WINDOWS, "/home/me", "is not an absolute Windows path"),
    ],
)
def test_a_location_must_name_a_directory_without_a_current_directory(
    host: Host, path: str, expected: str
) -> None:
    e = refused(lambda: make_share(path, host))
    assert expected in e.message and e.hint


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ("/", "a share at / would hide the guest's own /bin"),
        ("/usr", "mount point /usr is part of the guest's own system"),
        ("/usr/local/src", "mount point /usr/local/src is inside /usr, which is part of"),
        ("/etc/ssh", "is inside /etc"),
        ("/bin", "mount point /bin is part of"),
        ("/var", "a share at /var would hide the guest's own /var/backups"),
        ("/var/lib/docker", "is inside /var/lib"),
        ("/run/media/me/usb", "is inside /run"),
        ("/proc/self", "is inside /proc"),
        ("/dev", "mount point /dev is part of"),
        ("/tmp", "a share at /tmp would hide the guest's own /tmp"),
        ("/tmp/", "a share at /tmp would hide"),
    ],
)
def test_the_guests_own_system_directories_cannot_be_mount_points(
    point: str, expected: str
) -> None:
    e = refused(lambda: check_mount_point(point))
    assert expected in e.message
    assert "e.g. /mnt/" in e.hint or "e.g. /tmp/share" in e.hint


@pytest.mark.parametrize(
    "point",
    [
        "/root",  # the guest's sshd reads the agent's key from /etc/ssh, not /root/.ssh
        "/home/me",
        "/tmp/lima",
        "/var/folders/xy/T",
        "/var/www",
        "/mnt/data",
        "/c/Users/me",
        "/srv",
        "/usrdata",  # only /usr and what is inside it belong to the guest
    ],
)
def test_other_absolute_paths_are_mount_points(point: str) -> None:
    assert check_mount_point(point) == point


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        ("src", "'src' is not an absolute path"),
        ("C:\\src", "is not an absolute path"),
        ("/home/me/a\nb", "has a control character or ends in white space"),
        ("/home/me/tab\there", "has a control character"),
        ("/home/me/src ", "ends in white space"),
    ],
)
def test_a_mount_point_is_one_plain_absolute_guest_path(point: str, expected: str) -> None:
    e = refused(lambda: check_mount_point(point))
    assert expected in e.message and e.hint


def test_a_share_is_an_immutable_value() -> None:
    share = make_share("/home/me", LINUX)
    with pytest.raises(dataclasses.FrozenInstanceError):
        share.writable = False  # type: ignore[misc]
    assert {share, make_share("~", LINUX)} == {share}  # hashable: the agent keys on shares


# --- the default ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "share"),
    [
        (LINUX, Share("/home/me", "/home/me", True)),
        (MAC, Share("/Users/me", "/Users/me", True)),
        (WINDOWS, Share("C:\\Users\\me", "/c/Users/me", True)),
        (Host("linux", "/root"), Share("/root", "/root", True)),  # pyd run as root
    ],
)
def test_the_default_share_is_the_home_directory_writable(host: Host, share: Share) -> None:
    assert default_shares(host) == (share,)


@pytest.mark.parametrize("home", ["", "/var/lib/jenkins", "/"])
def test_no_default_share_where_the_home_directory_cannot_be_one(home: str) -> None:
    # A service account's home in the guest's /var/lib must not make every command fail.
    assert default_shares(Host("linux", home)) == ()


# --- shares together ------------------------------------------------------------------------

HOME = Share("/home/me", "/home/me", True)
DATA = Share("/data", "/mnt/data", False)


def test_added_shares_come_after_the_others_and_the_input_is_untouched() -> None:
    shares = (HOME,)
    assert with_share_added(shares, DATA) == (HOME, DATA)
    assert shares == (HOME,)


def _clash(held: Share, new: Share) -> UsageError:
    return refused(lambda: with_share_added((held,), new))


def test_a_directory_is_shared_once() -> None:
    assert _clash(HOME, HOME).message == "/home/me is already shared"
    again = _clash(HOME, Share("/home/me", "/mnt/me", False))
    assert again.message == "/home/me is already shared, as /home/me (at /home/me, writable)"
    assert "`pyd mount rm /home/me` first" in again.hint


def test_windows_directories_are_one_whatever_their_case() -> None:
    e = _clash(
        Share("C:\\Users\\me", "/c/Users/me", True), Share("c:\\users\\ME", "/c/users/ME", True)
    )
    assert e.message.startswith("c:\\users\\ME is already shared") and "shared once" in e.hint


def test_a_mount_point_holds_one_share() -> None:
    e = _clash(DATA, Share("/backup", "/mnt/data", True))
    assert e.message == "mount point /mnt/data is taken by the share of /data"
    assert "choose another mount point" in e.hint


def test_a_directory_inside_a_share_is_already_in_the_guest() -> None:
    e = _clash(HOME, Share("/home/me/src", "/home/me/src", False))
    assert e.message == (
        "/home/me/src is already in the guest, at /home/me/src, through the share of /home/me"
    )
    assert "to share it on its own (e.g. read-only), `pyd mount rm /home/me` first" in e.hint
    windows = Share("C:\\Users\\me", "/c/Users/me", True)
    e = _clash(windows, Share("C:\\Users\\me\\src", "/c/Users/me/src", True))
    assert e.message.startswith("C:\\Users\\me\\src is already in the guest, at /c/Users/me/src")


def test_mount_points_inside_or_around_another_are_refused() -> None:
    inside = _clash(HOME, Share("/data", "/home/me/data", True))
    assert inside.message == (
        "mount point /home/me/data is inside /home/me, the mount point of /home/me"
    )
    around = _clash(DATA, Share("/srv", "/mnt", True))
    assert around.message == "mount point /mnt contains /mnt/data, the mount point of /data"
    assert "nested shares are refused" in inside.hint and "nested shares are refused" in around.hint


def test_siblings_and_look_alike_prefixes_are_not_nested() -> None:
    shares = with_share_added((HOME,), Share("/home/meat", "/home/meat", True))
    assert with_share_added(shares, Share("/srv", "/home/other", True))[-1].location == "/srv"


@pytest.mark.parametrize(
    ("named", "location", "left"),
    [
        ("/mnt/data", None, (HOME,)),  # by mount point
        ("/mnt/data/", "/elsewhere", (HOME,)),
        ("data", "/data", (HOME,)),  # by host directory: the CLI made it absolute
        ("/home/me", "/home/me", (DATA,)),  # both, one share
    ],
)
def test_a_share_is_removed_by_its_mount_point_or_host_directory(
    named: str, location: str | None, left: tuple[Share, ...]
) -> None:
    assert with_share_removed((HOME, DATA), named, location) == left


def test_removing_what_is_not_shared_lists_the_shares() -> None:
    e = refused(lambda: with_share_removed((HOME, DATA), "/srv", "/srv"))
    assert e.message == "no share matches '/srv'"
    assert "/home/me (at /home/me, writable); /data (at /mnt/data, read-only)" in e.hint
    e = refused(lambda: with_share_removed((), "/srv", "/srv"))
    assert "there are none" in e.message and "pyd mount add PATH" in e.hint


def test_a_name_that_is_one_shares_directory_and_anothers_mount_point_is_ambiguous() -> None:
    a = Share("/data", "/srv", True)
    b = Share("/srv", "/mnt/srv", True)
    e = refused(lambda: with_share_removed((a, b), "/srv", "/srv"))
    assert e.message.startswith("'/srv' matches 2 shares: /data (at /srv, writable)")
    assert e.hint == "name one by its other path: `pyd mount rm /data` or `pyd mount rm /mnt/srv`"
    assert with_share_removed((a, b), "/mnt/srv", None) == (a,)
