"""Which host directories are watched: what running containers bind-mount from shares that
replay events, and where a host path is in the guest (pure; linux, darwin and win32)."""

from __future__ import annotations

from typing import Any

from pyd.fileevents.targets import Target, guest_path, host_path, outermost, watch_targets
from pyd.mounts.shares import Share

HOME = Share("/home/me", "/home/me", True)
RO = Share("/srv/data", "/srv/data", False)
WIN = Share("C:\\Users\\me", "/c/Users/me", True)


def _container(*sources: str, state: str = "running") -> dict[str, Any]:
    return {
        "Names": ["/web"],
        "State": state,
        "Mounts": [{"Type": "bind", "Source": s, "Destination": "/x"} for s in sources]
        + [{"Type": "volume", "Source": "/var/lib/docker/volumes/v/_data"}],
    }


def test_only_what_running_containers_bind_from_a_share_is_watched() -> None:
    containers = [
        _container("/home/me/src/app"),
        _container("/home/me/other", state="exited"),
        _container("/etc/hosts-copy"),  # in no share
    ]
    assert watch_targets(containers, [HOME], (), "linux") == (Target("/home/me/src/app", HOME),)


def test_a_share_switched_off_or_read_only_is_not_watched() -> None:
    containers = [_container("/home/me/src", "/srv/data/x")]
    assert watch_targets(containers, [HOME, RO], {"/home/me"}, "linux") == ()


def test_binds_inside_another_watched_tree_are_watched_once() -> None:
    containers = [_container("/home/me/src/app/web"), _container("/home/me/src/app")]
    assert watch_targets(containers, [HOME], (), "darwin") == (Target("/home/me/src/app", HOME),)
    # a sibling with a common prefix is not inside
    two = outermost([Target("/home/me/a", HOME), Target("/home/me/ab", HOME)], "linux")
    assert len(two) == 2


def test_windows_binds_are_watched_at_their_host_path() -> None:
    containers = [_container("/c/Users/me/src/app")]
    assert watch_targets(containers, [WIN], (), "win32") == (
        Target("C:\\Users\\me\\src\\app", WIN),
    )


def test_host_paths_map_into_the_guest_and_back() -> None:
    assert guest_path("/home/me/src/a b.js", HOME, "linux") == "/home/me/src/a b.js"
    assert guest_path("/home/me", HOME, "linux") == "/home/me"
    assert guest_path("/home/meow/x", HOME, "linux") is None
    assert guest_path("c:\\users\\ME\\src\\a.js", WIN, "win32") == "/c/Users/me/src/a.js"
    assert host_path("/c/Users/me/src", WIN, "win32") == "C:\\Users\\me\\src"
    assert host_path("/c/Users/me", WIN, "win32") == "C:\\Users\\me"
    mnt = Share("/Users/me/src", "/src", True)
    assert guest_path("/Users/me/src/lib/a.py", mnt, "darwin") == "/src/lib/a.py"
    assert host_path("/src/lib", mnt, "darwin") == "/Users/me/src/lib"
