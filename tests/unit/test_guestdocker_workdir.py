"""Where `pyd docker` runs in the guest: the host's current directory through the shares, and
which commands may run when it is not shared."""

from __future__ import annotations

import pytest

from pyd.errors import UsageError
from pyd.guestdocker.tools import COMPOSE
from pyd.guestdocker.workdir import guest_workdir, needs_workdir, unshared_error
from pyd.mounts.shares import Share

LINUX, MAC, WIN = "linux", "darwin", "win32"
HOME = Share("/home/me", "/home/me", True)
SRC_ELSEWHERE = Share("/home/me/src", "/mnt/src", False)
DATA = Share("/data/projects", "/mnt/projects", True)


@pytest.mark.parametrize(
    ("host_dir", "expected"),
    [
        ("/home/me", "/home/me"),
        ("/home/me/app/sub dir", "/home/me/app/sub dir"),
        ("/data/projects/web", "/mnt/projects/web"),  # a share at another mount point
        ("/data/projects", "/mnt/projects"),
        ("/home/me/src/x", "/home/me/src/x"),  # at its own path beats the inner share
    ],
)
def test_a_directory_inside_a_share_is_the_mount_point_plus_the_rest(
    host_dir: str, expected: str
) -> None:
    assert guest_workdir(host_dir, [HOME, SRC_ELSEWHERE, DATA], LINUX) == expected


def test_the_innermost_share_wins_when_none_shows_the_same_path() -> None:
    outer = Share("/data", "/mnt/data", True)
    inner = Share("/data/projects", "/mnt/projects", True)
    assert guest_workdir("/data/projects/web", [outer, inner], MAC) == "/mnt/projects/web"
    assert guest_workdir("/data/projects/web", [inner, outer], MAC) == "/mnt/projects/web"


@pytest.mark.parametrize("host_dir", ["/home/mex", "/home", "/", "/tmp/build", "/data/projectsX"])
def test_outside_every_share_there_is_no_guest_directory(host_dir: str) -> None:
    assert guest_workdir(host_dir, [HOME, DATA], LINUX) is None


def test_windows_directories_are_translated_and_compared_case_insensitively() -> None:
    shares = [Share("C:\\Users\\Me", "/c/Users/Me", True), Share("D:\\Work", "/work", True)]
    assert guest_workdir("C:\\Users\\Me\\src\\App", shares, WIN) == "/c/Users/Me/src/App"
    assert guest_workdir("c:\\users\\me\\src", shares, WIN) == "/c/Users/Me/src"
    assert guest_workdir("D:\\work\\Site", shares, WIN) == "/work/Site"
    assert guest_workdir("E:\\other", shares, WIN) is None


def test_posix_hosts_compare_paths_exactly() -> None:
    assert guest_workdir("/Home/me", [HOME], MAC) is None


def test_the_error_outside_shares_lists_them_and_says_how_to_add_one() -> None:
    e = unshared_error("/tmp/my build", [HOME, DATA], " -n dev")
    assert isinstance(e, UsageError) and e.exit_code == 2
    assert "/tmp/my build is not shared" in e.message
    assert "/home/me (at /home/me, writable)" in e.message
    assert "/data/projects (at /mnt/projects, writable)" in e.message
    assert "`pyd mount add '/tmp/my build' -n dev`" in e.hint


def test_the_error_says_when_nothing_is_shared() -> None:
    assert "nothing is shared" in unshared_error("/x", [], "").message


@pytest.mark.parametrize(
    "args",
    [
        ["ps", "-a"],
        ["version"],
        ["--context", "x", "info"],
        ["-H", "unix:///x", "logs", "-f", "c"],
        ["image", "ls"],
        ["container", "rm", "-f", "c"],
        ["network", "create", "n"],
        ["run", "--rm", "-it", "alpine", "sh"],
        ["exec", "-it", "c", "sh"],
        ["--version"],
        [],
    ],
)
def test_commands_that_read_no_host_files_need_no_shared_directory(args: list[str]) -> None:
    assert not needs_workdir(args)


@pytest.mark.parametrize(
    "args",
    [
        ["build", "."],
        ["buildx", "build", "."],
        ["image", "build", "-t", "x", "."],
        ["compose", "up"],
        ["cp", "f", "c:/x"],
        ["load", "-i", "img.tar"],
        ["save", "-o", "img.tar", "x"],
        ["run", "-v", "./src:/src", "alpine"],
        ["run", "--volume=data:/data", "alpine"],
        ["run", "-itv", "./src:/src", "alpine"],
        ["create", "--env-file", ".env", "alpine"],
        ["container", "run", "--mount", "type=bind,src=.,dst=/s", "alpine"],
        ["exec", "--env-file", ".env", "c", "env"],
        ["context", "import", "x", "x.tar"],
        ["frobnicate"],  # unknown: may
    ],
)
def test_commands_that_may_read_host_files_need_the_directory(args: list[str]) -> None:
    assert needs_workdir(args)


def test_compose_always_needs_the_directory() -> None:
    assert COMPOSE.needs_workdir(["ps"])
