"""`pyd doctor`: the pure checks for linux, darwin and win32 (each failing check's fix on each
OS), the CLI (exit codes, --json, fixes printed), what a failed `pyd start` adds to its hint,
and one real run on this machine."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyd.cli import doctor_cmd
from pyd.config.machine import Accel
from pyd.config.settings import BackendName
from pyd.doctor import probes
from pyd.doctor.checks import (
    GIB,
    OPENSSH_CLIENT_WINDOWS,
    WINDOWS_SFTP_SERVER,
    WINDOWS_SSH,
    Check,
    DiskSpace,
    Facts,
    accel_check,
    all_checks,
    context_check,
    disk_check,
    docker_cli_check,
    exit_code,
    libvirt_check,
    loopback_check,
    qemu_check,
    qemu_img_check,
    sftp_server_check,
    ssh_check,
    start_fixes,
)
from pyd.errors import EnvironmentProblem, PydError, UsageError
from pyd.vm.accel import ENABLE_WHPX, AccelProbe, HostFacts, interpret

SYSTEMS = ("linux", "darwin", "win32")
GOOD_ACCEL = AccelProbe(Accel.KVM, True, "/dev/kvm opens and the CPU supports it")
LINUX = Facts(
    system="linux",
    host_arch="x86_64",
    guest_arch="x86_64",
    qemu_program="qemu-system-x86_64",
    qemu_path="/usr/bin/qemu-system-x86_64",
    qemu_version=(8, 2, 2),
    qemu_img_path="/usr/bin/qemu-img",
    accel_setting="auto",
    accel=GOOD_ACCEL,
    backend_setting="auto",
    recorded_backend=None,
    libvirt_uri="qemu:///system",
    libvirt_answers=True,
    ssh_path="/usr/bin/ssh",
    sftp_server="/usr/lib/openssh/sftp-server",
    sftp_wanted=True,
    docker_cli="/usr/bin/docker",
    instance="default",
    context="pyd",
    context_exists=True,
    instance_ran=True,
    has_systemd=True,
    disks=(DiskSpace("image cache", "/c/images", 50 * GIB), DiskSpace("instances", "/h", 50 * GIB)),
)
MAC = dataclasses.replace(
    LINUX,
    system="darwin",
    host_arch="aarch64",
    guest_arch="aarch64",
    qemu_program="qemu-system-aarch64",
    qemu_path="/opt/homebrew/bin/qemu-system-aarch64",
    qemu_version=(9, 1, 0),
    qemu_img_path="/opt/homebrew/bin/qemu-img",
    accel=AccelProbe(Accel.HVF, True, "kern.hv_support is 1"),
    libvirt_uri="qemu:///session",
    libvirt_answers=False,
    sftp_server=None,
    sftp_wanted=False,
    has_systemd=False,
)
WINDOWS = dataclasses.replace(
    LINUX,
    system="win32",
    qemu_path=r"C:\Program Files\qemu\qemu-system-x86_64.exe",
    qemu_version=(11, 0, 0),
    qemu_img_path=r"C:\Program Files\qemu\qemu-img.exe",
    accel=AccelProbe(Accel.WHPX, True, "the Windows Hypervisor Platform is running"),
    libvirt_uri="",
    libvirt_answers=False,
    ssh_path=WINDOWS_SSH,
    sftp_server=None,
    sftp_wanted=False,
    has_systemd=False,
)
BY_SYSTEM = {"linux": LINUX, "darwin": MAC, "win32": WINDOWS}


def _named(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_healthy_host_passes_every_check(system: str) -> None:
    checks = all_checks(BY_SYSTEM[system])
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert exit_code(checks) == 0 and start_fixes(checks) == []
    names = [c.name for c in checks]
    libvirt = ["libvirt"] if system == "linux" else []  # no libvirt for pyd elsewhere
    assert names == [
        "qemu",
        "qemu-img",
        "accelerator",
        *libvirt,
        "ssh",
        "sftp-server",
        "disk (image cache)",
        "disk (instances)",
        "docker CLI",
        "docker context pyd",
        "loopback port",
    ]


# --- QEMU --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "looked_in", "fix"),
    [
        ("linux", "PATH", "sudo apt-get install qemu-utils"),
        ("darwin", "/opt/homebrew/bin, /usr/local/bin, PATH", "brew install qemu"),
        ("win32", r"PATH, C:\Program Files\qemu", "winget install SoftwareFreedomConservancy.QEMU"),
    ],
)
def test_missing_qemu_img_fails_a_start_with_the_install_command(
    system: str, looked_in: str, fix: str
) -> None:
    """qemu-img makes the disks: required, looked for where QEMU is (not PATH alone)."""
    assert qemu_img_check(BY_SYSTEM[system]).ok
    facts = dataclasses.replace(BY_SYSTEM[system], qemu_img_path=None)
    check = qemu_img_check(facts)
    assert check.fails and check.fix == fix
    exe = "qemu-img.exe" if system == "win32" else "qemu-img"
    assert check.detail == f"{exe} is not installed (looked in: {looked_in})"
    (line,) = start_fixes(all_checks(facts))
    assert line.startswith(f"qemu-img: {exe} is not installed") and line.endswith(fix)


@pytest.mark.parametrize(
    ("system", "fix"),
    [
        ("linux", "sudo apt-get install qemu-system-x86"),
        ("darwin", "brew install qemu"),
        ("win32", "winget install SoftwareFreedomConservancy.QEMU"),
    ],
)
def test_missing_qemu_fails_with_the_install_command(system: str, fix: str) -> None:
    facts = dataclasses.replace(BY_SYSTEM[system], qemu_path=None, qemu_version=None)
    check = qemu_check(facts)
    assert not check.ok and check.required and check.fix == fix
    assert "is not installed" in check.detail
    assert exit_code(all_checks(facts)) == 1


@pytest.mark.parametrize(
    ("system", "version", "fix"),
    [
        ("linux", (7, 1, 0), "sudo apt-get install --only-upgrade qemu-system-arm"),
        ("darwin", (8, 2, 0), "brew upgrade qemu"),  # the M3 firmware fix is in 8.2.1
        ("win32", (10, 0, 2), "winget upgrade SoftwareFreedomConservancy.QEMU"),
    ],
)
def test_an_old_qemu_fails_with_the_upgrade_command(
    system: str, version: tuple[int, int, int], fix: str
) -> None:
    facts = dataclasses.replace(
        BY_SYSTEM[system],
        host_arch="aarch64",
        guest_arch="aarch64",
        qemu_program="qemu-system-aarch64",
        qemu_version=version,
    )
    check = qemu_check(facts)
    assert not check.ok and check.required and check.fix == fix
    assert "or newer" in check.detail


def test_a_qemu_that_does_not_run_says_why_and_how_to_reinstall() -> None:
    facts = dataclasses.replace(LINUX, qemu_version=None, qemu_error="exit 127: libfoo.so")
    check = qemu_check(facts)
    assert not check.ok and "libfoo.so" in check.detail
    assert check.fix == "sudo apt-get install qemu-system-x86"


# --- the accelerator ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "facts", "fix"),
    [
        ("linux", HostFacts(cpu_flags=frozenset({"vmx"})), "sudo modprobe kvm_intel"),
        (
            "linux",
            HostFacts(kvm_exists=True, cpu_flags=frozenset({"svm"})),
            'sudo usermod -aG kvm "$USER", then log in again',
        ),
        ("win32", HostFacts(), ENABLE_WHPX),
    ],
)
def test_an_unusable_accelerator_warns_under_auto_with_its_fix(
    system: str, facts: HostFacts, fix: str
) -> None:
    probe = interpret(system, "x86_64", "x86_64", facts)
    check = accel_check(dataclasses.replace(BY_SYSTEM[system], accel=probe))
    assert not check.ok and not check.required and check.fix == fix
    assert "falls back to tcg" in check.detail


def test_a_mac_without_hypervisor_framework_warns_and_says_no_command_helps() -> None:
    probe = interpret("darwin", "aarch64", "aarch64", HostFacts(hv_support="0"))
    check = accel_check(dataclasses.replace(MAC, accel=probe))
    assert not check.ok and not check.required
    assert "kern.hv_support is 0" in check.detail and check.fix.startswith("none on this Mac")


def test_python_under_rosetta_warns_with_the_arm64_python_to_install() -> None:
    checks = all_checks(dataclasses.replace(MAC, rosetta=True))
    check = _named(checks)["python"]
    assert not check.ok and not check.required and exit_code(checks) == 0
    assert check.detail.startswith("Python runs under Rosetta")
    assert "arm64 Python" in check.fix and "/opt/homebrew/bin/brew install python" in check.fix
    assert [c.name for c in checks][:4] == ["qemu", "qemu-img", "accelerator", "python"]


def test_an_accelerator_the_settings_name_is_required() -> None:
    probe = interpret("win32", "x86_64", "x86_64", HostFacts())
    check = accel_check(dataclasses.replace(WINDOWS, accel=probe, accel_setting="whpx"))
    assert not check.ok and check.required and check.fix == ENABLE_WHPX
    assert "falls back" not in check.detail


# --- libvirt -----------------------------------------------------------------------------


def test_libvirt_that_does_not_answer_only_warns_when_auto_falls_back_to_qemu() -> None:
    facts = dataclasses.replace(LINUX, libvirt_answers=False, libvirt_why_not="Connection refused")
    check = libvirt_check(facts)
    assert check is not None and not check.ok and not check.required
    assert check.detail == (
        "libvirtd does not answer at qemu:///system (Connection refused); backend auto runs "
        "QEMU directly instead"
    )
    assert check.fix == "sudo systemctl start libvirtd"
    no_systemd = libvirt_check(dataclasses.replace(facts, has_systemd=False))
    assert no_systemd is not None and no_systemd.fix == "sudo sh -c 'virtlogd -d && libvirtd -d'"


@pytest.mark.parametrize(
    ("setting", "recorded"), [("libvirt", None), ("auto", BackendName.LIBVIRT)]
)
def test_libvirt_is_required_where_the_instance_runs_with_it(
    setting: str, recorded: BackendName | None
) -> None:
    facts = dataclasses.replace(
        LINUX, backend_setting=setting, recorded_backend=recorded, libvirt_answers=False
    )
    check = libvirt_check(facts)
    assert check is not None and check.fails and check.fix == "sudo systemctl start libvirtd"
    assert exit_code(all_checks(facts)) == 1


def test_a_missing_libvirt_binding_names_the_packages_and_the_binding() -> None:
    facts = dataclasses.replace(LINUX, libvirt_uri="", libvirt_answers=False)
    check = libvirt_check(dataclasses.replace(facts, libvirt_why_not="binding missing"))
    assert check is not None and not check.required and check.detail.startswith("binding missing")
    assert check.fix.endswith("pip install libvirt-python")


def test_libvirt_is_not_checked_where_pyd_does_not_use_it() -> None:
    ok = libvirt_check(dataclasses.replace(LINUX, backend_setting="qemu", libvirt_answers=False))
    assert ok is not None and ok.ok and ok.detail == "not used (backend qemu)"
    assert libvirt_check(MAC) is None and libvirt_check(WINDOWS) is None


@pytest.mark.parametrize(
    ("system", "fix"),
    [("darwin", "brew services start libvirt"), ("win32", "pyd config set backend qemu")],
)
def test_libvirt_asked_for_outside_linux_is_checked(system: str, fix: str) -> None:
    check = libvirt_check(dataclasses.replace(BY_SYSTEM[system], backend_setting="libvirt"))
    assert check is not None and check.fails and check.fix == fix


# --- ssh and sftp-server -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "fix"),
    [
        ("linux", "sudo apt-get install openssh-client"),
        ("darwin", "macOS ships /usr/bin/ssh: put /usr/bin back on PATH"),
        ("win32", OPENSSH_CLIENT_WINDOWS),
    ],
)
def test_a_missing_ssh_warns_with_the_install_command(system: str, fix: str) -> None:
    check = ssh_check(dataclasses.replace(BY_SYSTEM[system], ssh_path=None))
    assert not check.ok and not check.required and check.fix == fix
    assert "agent's own connection" in check.detail


def test_windows_ssh_fix_is_the_openssh_client_capability() -> None:
    check = ssh_check(dataclasses.replace(WINDOWS, ssh_path=None))
    assert f"PATH or {WINDOWS_SSH}" in check.detail
    assert check.fix == (
        "in an administrator PowerShell: Add-WindowsCapability -Online -Name "
        "OpenSSH.Client~~~~0.0.1.0"
    )


def test_a_missing_sftp_server_warns_only_where_shares_use_it() -> None:
    linux = sftp_server_check(dataclasses.replace(LINUX, sftp_server=None))
    assert not linux.ok and not linux.required
    assert linux.fix == "sudo apt-get install openssh-sftp-server"
    windows = sftp_server_check(WINDOWS)
    assert windows.ok and WINDOWS_SFTP_SERVER in windows.detail and "built-in" in windows.detail
    mac = sftp_server_check(MAC)
    assert mac.ok and "/usr/libexec/sftp-server" in mac.detail


# --- disks, docker, loopback -------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "ok", "required"),
    [(50 * GIB, True, True), (9 * GIB, False, False), (GIB // 2, False, True)],
)
def test_free_disk_warns_below_10_gib_and_fails_below_1(
    free: int, ok: bool, required: bool
) -> None:
    check = disk_check(DiskSpace("image cache", "/c/images", free))
    assert (check.ok, check.required) == (ok, required)
    if not ok:
        assert check.fix == "free space on the disk holding /c/images, e.g. `pyd image prune`"


def test_unreadable_free_space_warns() -> None:
    check = disk_check(DiskSpace("instances", "/h", None, "Permission denied"))
    assert not check.ok and not check.required and "Permission denied" in check.detail
    assert check.fix


def test_a_missing_docker_cli_warns_and_offers_the_shim() -> None:
    check = docker_cli_check(dataclasses.replace(LINUX, docker_cli=None))
    assert not check.ok and not check.required and check.fix == "pyd shim install"


def test_the_context_of_an_instance_that_ran_must_exist() -> None:
    facts = dataclasses.replace(LINUX, instance="dev", context="pyd-dev", context_exists=False)
    check = context_check(facts)
    assert check.name == "docker context pyd-dev" and not check.ok and not check.required
    assert check.fix == "pyd start -n dev"
    fresh = context_check(dataclasses.replace(facts, instance_ran=False))
    assert fresh.ok and fresh.detail == "made at the first `pyd start -n dev`"


@pytest.mark.parametrize(
    ("system", "fix"),
    [("linux", "sudo ip link set lo up"), ("darwin", "sudo ifconfig lo0 up"), ("win32", "netsh")],
)
def test_no_loopback_listener_fails_with_the_fix(system: str, fix: str) -> None:
    facts = dataclasses.replace(BY_SYSTEM[system], loopback_error="Cannot assign address")
    check = loopback_check(facts)
    assert check.fails and check.fix.startswith(fix)


def test_start_fixes_are_the_failing_checks_that_can_stop_a_start() -> None:
    facts = dataclasses.replace(
        LINUX, qemu_path=None, qemu_version=None, docker_cli=None, ssh_path=None
    )
    (line,) = start_fixes(all_checks(facts))  # not ssh, not the docker CLI
    assert line.startswith("qemu: qemu-system-x86_64 is not installed")
    assert line.endswith("; fix: sudo apt-get install qemu-system-x86")


def test_warnings_alone_exit_0() -> None:
    facts = dataclasses.replace(LINUX, docker_cli=None, ssh_path=None, libvirt_answers=False)
    checks = all_checks(facts)
    assert sum(not c.ok for c in checks) == 3 and exit_code(checks) == 0


# --- the CLI -----------------------------------------------------------------------------


def _pyd(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYD_HOME": str(home), "PYD_CACHE_DIR": str(home / "cache")}
    full.update(DOCKER_CONFIG=str(home / "docker"), COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=full, check=False
    )


def test_doctor_without_qemu_exits_1_and_prints_the_fix(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "doctor", PATH=str(tmp_path / "empty"))
    assert r.returncode == 1, r.stderr
    assert "FAIL qemu: qemu-system-x86_64 is not installed" in r.stdout
    assert "fix: sudo apt-get install qemu-system-x86" in r.stdout
    assert "Traceback" not in r.stderr


def test_doctor_json_is_a_list_of_checks(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "doctor", "--json", "-n", "dev", PATH=str(tmp_path / "empty"))
    assert r.returncode == 1
    checks = json.loads(r.stdout)
    assert isinstance(checks, list) and checks
    assert all(set(c) == {"name", "ok", "detail", "fix", "required"} for c in checks)
    qemu = next(c for c in checks if c["name"] == "qemu")
    assert qemu["ok"] is False and qemu["required"] is True
    assert any(c["name"] == "docker context pyd-dev" for c in checks)
    assert not (tmp_path / "instances" / "dev").exists()  # the doctor creates nothing


def test_doctor_runs_for_real_here(tmp_path: Path) -> None:
    """One real run: the exit code follows the required checks, and QEMU (which this
    project's CI installs) is found."""
    r = _pyd(tmp_path, "doctor", "--json")
    checks = json.loads(r.stdout)
    assert r.returncode == (1 if any(c["required"] and not c["ok"] for c in checks) else 0)
    assert next(c for c in checks if c["name"] == "qemu")["ok"], r.stdout


def test_doctor_refuses_a_bad_name(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "doctor", "-n", "Bad_Name")
    assert r.returncode == 2 and "invalid instance name" in r.stderr


def test_a_failed_start_gets_the_doctor_s_fixes_after_its_own_error(tmp_path: Path) -> None:
    # No QEMU, no mmdebstrap and no image index: the start fails at its image.
    r = _pyd(tmp_path, "start", "-n", "dtest", "--no-context", PATH=str(tmp_path / "empty"))
    assert r.returncode == 1
    error, hint = r.stderr.index("error: no image index"), r.stderr.index("pyd doctor finds:")
    assert error < hint
    assert "qemu: qemu-system-x86_64 is not installed" in r.stderr
    assert "fix: sudo apt-get install qemu-system-x86" in r.stderr
    assert "docker CLI" not in r.stderr and "Traceback" not in r.stderr


def test_start_fixes_never_raise_nor_touch_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(name: str) -> Facts:
        raise RuntimeError("probe crashed")

    monkeypatch.setattr(probes, "gather", broken)
    error = EnvironmentProblem("QEMU failed", hint="see qemu.log")
    doctor_cmd.add_doctor_fixes(error, "default")
    assert (error.message, error.hint) == ("QEMU failed", "see qemu.log")

    monkeypatch.setattr(probes, "gather", lambda name: dataclasses.replace(LINUX, qemu_path=None))
    bad_input = UsageError("cpus: must be from 1 to 64", hint="e.g. 2")
    doctor_cmd.add_doctor_fixes(bad_input, "default")
    assert bad_input.hint == "e.g. 2"
    failed = PydError("boot timed out")
    doctor_cmd.add_doctor_fixes(failed, "default")
    assert failed.hint.startswith("pyd doctor finds:\n  qemu: ")


def test_an_unreadable_config_fails_first_and_the_rest_is_checked_on_defaults(
    tmp_path: Path,
) -> None:
    facts = dataclasses.replace(LINUX, config_error="config.toml: cpus: must be from 1 to 64")
    first, *rest = all_checks(facts)
    assert (first.name, first.fails) == ("config", True) and len(rest) == len(all_checks(LINUX))
    config = tmp_path / "instances" / "default" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("cpus = 0\n")
    r = _pyd(tmp_path, "doctor")
    assert r.returncode == 1 and "FAIL config: " in r.stdout and "cpus: must be from 1" in r.stdout
    assert f"fix: edit {config}" in r.stdout and "ok   loopback port" in r.stdout
