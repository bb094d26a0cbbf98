"""Windows host paths as the guest names them, and back: /c/Users/me for C:\\Users\\me."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyd.mounts.winpath import guest_path, guest_to_windows, windows_to_guest

from .outcomes import refused


@pytest.mark.parametrize(
    ("windows", "guest"),
    [
        ("C:\\Users\\me", "/c/Users/me"),
        ("c:\\Users\\me", "/c/Users/me"),
        ("C:/Users/me", "/c/Users/me"),  # forward slashes, as many tools write them
        ("C:\\Users/me\\\\src\\", "/c/Users/me/src"),  # mixed, doubled and trailing
        ("C:\\", "/c"),
        ("C:/", "/c"),
        ("D:\\a\\.\\b\\..\\c", "/d/a/c"),  # resolved in the text, as Windows does
        ("C:\\..\\x", "/c/x"),  # ".." at the root stays there
        ("\\\\?\\C:\\Users\\me", "/c/Users/me"),  # extended-length form of a local path
        ("C:\\Program Files\\Café", "/c/Program Files/Café"),
    ],
)
def test_a_drive_path_is_slash_drive_letter_in_the_guest(windows: str, guest: str) -> None:
    assert windows_to_guest(windows) == guest


@pytest.mark.parametrize(
    ("path", "expected", "hint"),
    [
        ("\\\\server\\share\\src", "network (UNC) or device path", "map the network share"),
        ("//server/share/src", "network (UNC) or device path", "drive letter"),
        ("\\\\?\\UNC\\server\\share", "network (UNC) or device path", "local drive"),
        ("\\\\.\\pipe\\docker", "network (UNC) or device path", "local drive"),
        ("Users\\me", "is not an absolute Windows path", "C:\\Users\\me\\src"),
        (".\\src", "is not an absolute Windows path", "drive letter"),
        ("\\Users\\me", "is not an absolute Windows path", "drive letter"),
        ("", "is not an absolute Windows path", "drive letter"),
        ("C:src", "is relative to the current directory of drive C:", "absolute path"),
        ("c:", "is relative to the current directory of drive C:", "absolute path"),
        ("1:\\x", "is not an absolute Windows path", "drive letter"),
        ("C:\\data:stream", "'data:stream' has characters Windows does not allow", "< > :"),
        ("C:\\a*b\\c", "'a*b' has characters Windows does not allow", "< > :"),
    ],
)
def test_what_is_not_a_local_absolute_windows_path_is_refused(
    path: str, expected: str, hint: str
) -> None:
    e = refused(lambda: windows_to_guest(path))
    assert repr(path) in e.message and expected in e.message
    assert hint in e.hint


@pytest.mark.parametrize(
    ("guest", "windows"),
    [
        ("/c/Users/me", "C:\\Users\\me"),
        ("/c", "C:\\"),
        ("/c/", "C:\\"),
        ("/d/a//b/./c/..", "D:\\a\\b"),
    ],
)
def test_a_guest_drive_path_is_the_windows_path_behind_it(guest: str, windows: str) -> None:
    assert guest_to_windows(guest) == windows


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/mnt/c/Users", "is not a Windows drive path as the guest names it"),
        ("/C/Users", "is not a Windows drive path as the guest names it"),  # always lower case
        ("c/Users", "is not a Windows drive path as the guest names it"),
        ("", "is not a Windows drive path as the guest names it"),
        ("/c/a\\b", "has a backslash in a name"),
        ("/c/a:b", "has characters Windows does not allow"),
    ],
)
def test_a_guest_path_outside_the_drives_has_no_windows_path(path: str, expected: str) -> None:
    e = refused(lambda: guest_to_windows(path))
    assert expected in e.message and e.hint


# Names Windows can hold: no separators, reserved characters or control characters, and not
# "." or ".." (which normalisation resolves away).
_NAME = st.text(
    st.characters(blacklist_characters='\\/<>:"|?*', blacklist_categories=("Cc", "Cs")),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))
_DRIVE = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_QUIET = settings(database=None)  # no example database in the checkout


@_QUIET
@given(_DRIVE, st.lists(_NAME, max_size=6))
def test_windows_paths_round_trip_through_the_guest(drive: str, names: list[str]) -> None:
    windows = drive + ":\\" + "\\".join(names)
    guest = windows_to_guest(windows)
    assert guest == "/" + drive.lower() + "".join("/" + n for n in names)
    assert guest_to_windows(guest) == windows


@_QUIET
@given(_DRIVE, st.lists(_NAME, max_size=6))
def test_guest_paths_round_trip_through_windows(drive: str, names: list[str]) -> None:
    guest = "/" + drive.lower() + "".join("/" + n for n in names)
    assert windows_to_guest(guest_to_windows(guest)) == guest


@_QUIET
@given(
    _DRIVE,
    st.lists(st.tuples(_NAME, st.sampled_from(["\\", "/", "\\\\", "/\\"])), min_size=1),
)
def test_every_spelling_of_separators_is_one_guest_path(
    drive: str, parts: list[tuple[str, str]]
) -> None:
    mixed = drive.lower() + ":" + "".join(sep + name for name, sep in parts)
    canonical = drive + ":\\" + "\\".join(name for name, _sep in parts)
    assert windows_to_guest(mixed) == windows_to_guest(canonical)


@pytest.mark.parametrize("platform", ["linux", "darwin"])
@pytest.mark.parametrize(
    ("host", "guest"),
    [
        ("/home/me", "/home/me"),
        ("/home/me/", "/home/me"),
        ("//Users//me/./src/..", "/Users/me"),
        ("/", "/"),
    ],
)
def test_a_posix_host_path_is_the_same_path_in_the_guest(
    platform: str, host: str, guest: str
) -> None:
    assert guest_path(host, platform) == guest


def test_guest_path_translates_windows_paths_on_windows_only() -> None:
    assert guest_path("C:\\Users\\me", "win32") == "/c/Users/me"
    assert "not an absolute path" in refused(lambda: guest_path("C:\\Users\\me", "linux")).message
    assert (
        "not an absolute Windows path" in refused(lambda: guest_path("/home/me", "win32")).message
    )


@pytest.mark.parametrize("path", ["home/me", "./src", "~/src", ""])
def test_a_relative_posix_path_has_no_guest_path(path: str) -> None:
    e = refused(lambda: guest_path(path, "linux"))
    assert "is not an absolute path" in e.message and "/home/me/src" in e.hint
