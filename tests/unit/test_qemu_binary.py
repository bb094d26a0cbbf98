"""Finding QEMU (and qemu-img) and checking its version per OS (vmconfig/qemu.toml): the
search order, the file name, the minimum per (OS, host arch) and the install/upgrade hints,
with the OS given as a parameter; then the edge with stand-in binaries on this machine."""

import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from pyd.config.qemu_install import QEMU_IMG, find_qemu, install_hint, upgrade_hint
from pyd.errors import EnvironmentProblem
from pyd.vm import qemu_binary
from pyd.vm.qemu_binary import (
    check_version,
    minimum_version,
    parse_version,
    qemu_version,
    require_qemu_binary,
)

X86 = "qemu-system-x86_64"
ARM = "qemu-system-aarch64"



def test_darwin_prefers_homebrew_on_apple_silicon_then_intel_then_path() -> None:
    path_env = "/Users/me/bin:/usr/bin"
    everywhere = {
        PurePosixPath("/opt/homebrew/bin") / ARM,
        PurePosixPath("/usr/local/bin") / ARM,
        PurePosixPath("/Users/me/bin") / ARM,
    }
    assert find_qemu(ARM, "darwin", path_env, everywhere.__contains__) == (
        PurePosixPath("/opt/homebrew/bin/qemu-system-aarch64")
    )
    everywhere.discard(PurePosixPath("/opt/homebrew/bin") / ARM)
    assert find_qemu(ARM, "darwin", path_env, everywhere.__contains__) == (
        PurePosixPath("/usr/local/bin/qemu-system-aarch64")
    )
    only_path = {PurePosixPath("/Users/me/bin") / ARM}
    assert find_qemu(ARM, "darwin", path_env, only_path.__contains__) == (
        PurePosixPath("/Users/me/bin/qemu-system-aarch64")
    )
    assert find_qemu(ARM, "darwin", path_env, set().__contains__) is None


def test_win32_looks_on_path_then_in_program_files_for_the_exe() -> None:
    path_env = r'C:\Windows\system32;"C:\Tools\qemu";;C:\Python312'
    installed = {PureWindowsPath(r"C:\Program Files\qemu\qemu-system-x86_64.exe")}
    assert find_qemu(X86, "win32", path_env, installed.__contains__) == PureWindowsPath(
        r"C:\Program Files\qemu\qemu-system-x86_64.exe"
    )
    # A QEMU on PATH (quoted entry and all) wins; a file without .exe is not it.
    both = installed | {PureWindowsPath(r"C:\Tools\qemu\qemu-system-x86_64.exe")}
    assert find_qemu(X86, "win32", path_env, both.__contains__) == PureWindowsPath(
        r"C:\Tools\qemu\qemu-system-x86_64.exe"
    )
    no_exe = {PureWindowsPath(r"C:\Tools\qemu\qemu-system-x86_64")}
    assert find_qemu(X86, "win32", path_env, no_exe.__contains__) is None


@pytest.mark.parametrize(
    ("system", "path_env", "installed"),
    [
        # Windows' QEMU installer leaves C:\Program Files\qemu off PATH.
        ("win32", r"C:\Windows\system32", r"C:\Program Files\qemu\qemu-img.exe"),
        # A GUI shell's PATH without Homebrew's prefix.
        ("darwin", "/usr/bin:/bin", "/opt/homebrew/bin/qemu-img"),
        ("linux", "/usr/local/bin:/usr/bin", "/usr/bin/qemu-img"),
    ],
)
def test_qemu_img_is_found_where_qemu_is(system: str, path_env: str, installed: str) -> None:
    kind = PureWindowsPath if system == "win32" else PurePosixPath
    there = {kind(installed)}
    assert find_qemu(QEMU_IMG, system, path_env, there.__contains__) == kind(installed)
    assert find_qemu(QEMU_IMG, system, path_env, set().__contains__) is None


def test_linux_looks_on_path_only() -> None:
    found = {PurePosixPath("/usr/bin") / X86, PurePosixPath("/usr/local/bin") / X86}
    assert find_qemu(X86, "linux", "/usr/bin:/bin", found.__contains__) == PurePosixPath(
        "/usr/bin/qemu-system-x86_64"
    )
    assert find_qemu(X86, "linux", "/bin", found.__contains__) is None


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("QEMU emulator version 8.2.1\nCopyright (c) 2003-2023 Fabrice Bellard", (8, 2, 1)),
        ("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n", (7, 2, 22)),
        ("QEMU emulator version 11.0.0 (v11.0.0-12026-g1234abcd)\n", (11, 0, 0)),
        ("QEMU emulator version 10.2.92 (v11.0.0-rc2)\n", (10, 2, 92)),  # a release candidate
        ("QEMU emulator version 9.1\n", (9, 1, 0)),
    ],
)
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize("text", ["", "qemu-img version 8.2.1", "Usage: ..."])
def test_parse_version_refuses_what_is_not_a_qemu_version(text: str) -> None:
    with pytest.raises(ValueError, match="no QEMU version"):
        parse_version(text)


@pytest.mark.parametrize(
    ("system", "host", "minimum", "reason"),
    [
        ("darwin", "aarch64", (8, 2, 1), "M3"),
        ("darwin", "x86_64", (7, 2, 0), "Intel"),
        ("linux", "x86_64", (7, 2, 0), "tested"),
        ("linux", "aarch64", (7, 2, 0), "tested"),
        ("win32", "x86_64", (11, 0, 0), "WHPX"),
    ],
)
def test_minimum_version_per_os_and_host_arch_says_why(
    system: str, host: str, minimum: tuple[int, int, int], reason: str
) -> None:
    needed, why = minimum_version(system, host)
    assert needed == minimum and reason in why
    assert check_version(minimum, X86, system, host) is None
    older = (minimum[0], minimum[1], minimum[2] - 1) if minimum[2] else (minimum[0] - 1, 9, 9)
    problem = check_version(older, X86, system, host)
    assert problem is not None and ".".join(map(str, minimum)) in problem and reason in problem


def test_apple_silicon_refuses_8_2_0_for_the_m3_firmware_fix() -> None:
    problem = check_version((8, 2, 0), ARM, "darwin", "aarch64")
    assert problem is not None
    assert problem.startswith("qemu-system-aarch64 is QEMU 8.2.0; pyd needs 8.2.1 or newer")
    assert check_version((10, 1, 0), ARM, "darwin", "aarch64") is None


@pytest.mark.parametrize(
    ("system", "program", "install", "upgrade"),
    [
        ("linux", X86, "sudo apt-get install qemu-system-x86", "--only-upgrade qemu-system-x86"),
        ("linux", ARM, "sudo apt-get install qemu-system-arm", "--only-upgrade qemu-system-arm"),
        ("linux", QEMU_IMG, "sudo apt-get install qemu-utils", "--only-upgrade qemu-utils"),
        ("darwin", ARM, "brew install qemu", "brew upgrade qemu"),
        ("darwin", QEMU_IMG, "brew install qemu", "brew upgrade qemu"),
        (
            "win32",
            QEMU_IMG,
            "winget install SoftwareFreedomConservancy.QEMU",
            "winget upgrade SoftwareFreedomConservancy.QEMU",
        ),
        (
            "win32",
            X86,
            "winget install SoftwareFreedomConservancy.QEMU",
            "winget upgrade SoftwareFreedomConservancy.QEMU",
        ),
    ],
)
def test_install_and_upgrade_hints_per_os(
    system: str, program: str, install: str, upgrade: str
) -> None:
    assert install_hint(program, system) == install
    assert upgrade in upgrade_hint(program, system)


# -- the edge, with stand-in binaries ----------------------------------------------------------


def _stand_in(folder: Path, name: str, output: str, code: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_require_qemu_binary_finds_and_checks_the_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = _stand_in(tmp_path / "bin", X86, "QEMU emulator version 9.2.0")
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty'}{os.pathsep}{tmp_path / 'bin'}")
    monkeypatch.setattr(qemu_binary, "host_arch", lambda: "x86_64")
    assert require_qemu_binary(X86, "linux") == binary
    assert qemu_version(binary) == (9, 2, 0)


def test_an_old_qemu_is_refused_with_the_upgrade_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stand_in(tmp_path / "bin", X86, "QEMU emulator version 6.2.0 (Debian 1:6.2+dfsg-2ubuntu6)")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(qemu_binary, "host_arch", lambda: "x86_64")
    with pytest.raises(EnvironmentProblem, match=r"QEMU 6\.2\.0; pyd needs 7\.2\.0") as info:
        require_qemu_binary(X86, "linux")
    assert "apt-get install --only-upgrade qemu-system-x86" in info.value.hint


def test_a_missing_qemu_is_refused_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match="qemu-system-aarch64 is not installed") as info:
        require_qemu_binary(ARM, "linux")
    assert "sudo apt-get install qemu-system-arm" in info.value.hint


def test_a_binary_that_prints_no_version_is_an_environment_problem(tmp_path: Path) -> None:
    broken = _stand_in(tmp_path, X86, "error while loading shared libraries", code=127)
    with pytest.raises(EnvironmentProblem, match="exit 127") as info:
        qemu_version(broken)
    assert "reinstall" in info.value.hint
