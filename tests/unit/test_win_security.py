"""The owner-only DACLs of Windows hosts (the instance directory, its files, the relay's
pipes) as SDDL, checked here on any OS; the Windows API that applies them runs only there."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pyd.host import private_files
from pyd.host.win_security import Securable, owner_only_sddl, protect

USER = "S-1-5-21-1004336348-1177238915-682003330-1001"
AZURE_AD_USER = "S-1-12-1-2743659314-1255927613-3117052348-3212371845"


def test_a_directory_is_the_users_alone_and_so_is_what_is_made_inside_it() -> None:
    # D:P: protected, the parent's (profile's, drive's) entries do not flow in; one entry:
    # allow (A) full access (FA), inherited by files (OI) and subdirectories (CI).
    assert owner_only_sddl(USER, Securable.DIRECTORY) == f"D:P(A;OICI;FA;;;{USER})"


def test_a_file_is_the_users_alone() -> None:
    assert owner_only_sddl(USER, Securable.FILE) == f"D:P(A;;FA;;;{USER})"


def test_a_pipe_keeps_the_dacl_it_had_in_the_relay() -> None:
    assert owner_only_sddl(USER, Securable.PIPE) == f"D:P(A;;GA;;;{USER})"
    assert owner_only_sddl(AZURE_AD_USER, Securable.PIPE) == f"D:P(A;;GA;;;{AZURE_AD_USER})"


@pytest.mark.parametrize(
    "sid",
    [
        "",
        "WD",  # Everyone's alias: no SDDL abbreviation passes for the user
        "S-1-5",
        f"{USER})(A;;GA;;;WD",  # a second entry, for Everyone
        f"{USER} ",
        "s-1-5-21-1-2-3-1001",
    ],
)
def test_anything_but_a_sid_is_refused_rather_than_written_into_the_dacl(sid: str) -> None:
    with pytest.raises(ValueError, match="not a SID"):
        owner_only_sddl(sid, Securable.DIRECTORY)


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX side")
def test_off_windows_modes_do_it_and_no_dacl_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(OSError, match="only on Windows"):
        protect(tmp_path, Securable.DIRECTORY)

    def no_dacl(path: Path, what: Securable) -> None:
        raise AssertionError(f"DACL asked for {path} off Windows")

    monkeypatch.setattr(private_files, "protect", no_dacl)
    private_files.private_dir(tmp_path / "inst")
    private_files.write_private_text(tmp_path / "inst" / "key", "secret")
    private_files.make_private(tmp_path / "inst")
    assert (tmp_path / "inst" / "key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_on_windows_each_directory_and_file_of_an_instance_gets_the_users_dacl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    """An instance an older pyd left under the profile's ACL, brought to owner-only at its
    next start (make_private), as on Windows; on POSIX the modes alone do it."""
    applied: list[tuple[str, Securable]] = []
    monkeypatch.setattr(
        private_files, "protect", lambda path, what: applied.append((str(path), what))
    )
    root = tmp_path / "inst"
    private_files.private_dir(root / "qmp-tls", platform)
    (root / "qmp-tls" / "client-key.pem").write_text("key")
    (root / "serial.log").write_text("")
    (root / "elsewhere").symlink_to(tmp_path)  # not the instance's: left alone
    win = platform == "win32"
    assert applied == ([(str(root / "qmp-tls"), Securable.DIRECTORY)] if win else [])
    applied.clear()
    private_files.make_private(root, platform)
    if not win:
        assert applied == []
        return
    assert sorted(applied, key=lambda a: a[0]) == [
        (str(root), Securable.DIRECTORY),
        (str(root / "qmp-tls"), Securable.DIRECTORY),
        (str(root / "qmp-tls" / "client-key.pem"), Securable.FILE),
        (str(root / "serial.log"), Securable.FILE),
    ]
