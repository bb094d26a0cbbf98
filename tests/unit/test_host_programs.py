"""Where pyd finds the programs it runs (host.programs): the folders in order and the file
name per OS, for linux, darwin and win32 anywhere; ssh where the doctor, shares and `pyd ssh`
all look (Windows' OpenSSH folder when PATH lacks it), and the edge on this machine."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from pyd.host.programs import PATH_TOKEN, exe_name, find_ssh, openssh_dirs, search_dirs

W = PureWindowsPath
P = PurePosixPath


@pytest.mark.parametrize(
    ("system", "name"), [("linux", "ssh"), ("darwin", "ssh"), ("win32", "ssh.exe")]
)
def test_a_program_s_file_name_per_os(system: str, name: str) -> None:
    assert exe_name("ssh", system) == name


def test_path_is_expanded_in_place_with_each_os_s_separator() -> None:
    assert search_dirs("win32", [PATH_TOKEN, r"C:\Program Files\qemu"], r'C:\a;"C:\b c";;') == [
        W(r"C:\a"),
        W(r"C:\b c"),
        W(r"C:\Program Files\qemu"),
    ]
    assert search_dirs("darwin", ["/opt/homebrew/bin", PATH_TOKEN], "/usr/bin::/bin") == [
        P("/opt/homebrew/bin"),
        P("/usr/bin"),
        P("/bin"),
    ]


def test_ssh_is_looked_for_on_path_then_in_windows_openssh_folder() -> None:
    env = {"PATH": r"C:\Tools", "SystemRoot": r"D:\WINDOWS"}
    assert openssh_dirs("win32", env) == [
        PATH_TOKEN,
        r"D:\WINDOWS\System32\OpenSSH",
        r"D:\WINDOWS\Sysnative\OpenSSH",  # what a 32-bit Python sees System32 as
    ]
    feature = W(r"D:\WINDOWS\System32\OpenSSH\ssh.exe")
    assert find_ssh("win32", env, {feature}.__contains__) == str(feature)
    on_path = {feature, W(r"C:\Tools\ssh.exe")}
    assert find_ssh("win32", env, on_path.__contains__) == r"C:\Tools\ssh.exe"  # PATH first
    assert find_ssh("win32", env, {W(r"C:\Tools\ssh")}.__contains__) is None  # not an .exe
    # No SystemRoot in the environment: Windows' usual folder.
    usual = W(r"C:\Windows\System32\OpenSSH\ssh.exe")
    assert find_ssh("win32", {"PATH": ""}, {usual}.__contains__) == str(usual)


@pytest.mark.parametrize("system", ["linux", "darwin"])
def test_ssh_is_looked_for_on_path_alone_on_posix(system: str) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin"}
    assert openssh_dirs(system, env) == [PATH_TOKEN]
    both = {P("/usr/local/bin/ssh"), P("/usr/bin/ssh")}
    assert find_ssh(system, env, both.__contains__) == "/usr/local/bin/ssh"
    assert find_ssh(system, env, {P("/opt/bin/ssh")}.__contains__) is None


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX stand-in")
def test_find_ssh_takes_only_an_executable_file(tmp_path: Path) -> None:
    plain, run = tmp_path / "plain", tmp_path / "run"
    for folder in (plain, run):
        folder.mkdir()
        (folder / "ssh").write_text("#!/bin/sh\n")
    (run / "ssh").chmod((run / "ssh").stat().st_mode | stat.S_IXUSR)
    (plain / "ssh").chmod(0o600)
    env = {"PATH": f"{plain}{os.pathsep}{run}"}
    assert find_ssh(sys.platform, env) == str(run / "ssh")
