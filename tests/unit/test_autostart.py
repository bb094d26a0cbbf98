"""`pyd autostart` (issue 20): the LaunchAgent, the systemd user unit and the Task Scheduler
task, each from its template, checked by the format's own parser (and systemd's own
verifier); the commands per OS; enable -> status -> disable with a stand-in for launchctl,
systemctl and schtasks, and on this Linux for real as far as it goes (no systemd here)."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest

from pyd.autostart import manager
from pyd.autostart.job import make_job
from pyd.autostart.manager import Host, Ran
from pyd.autostart.plan import XML_FILE, plan
from pyd.autostart.render import TASK_NS, render_plist, render_task, render_unit
from pyd.errors import PydError

ODD = "/tmp/a b&<%$x\"'\\"  # spaces, XML's and systemd's specials, quotes
ENV = {"PATH": "/opt/homebrew/bin:/usr/bin", "PYD_HOME": ODD, "HOME": "/Users/u"}
PY = "/Users/u/.local/pipx/venvs/pyd/bin/python"


def test_the_launch_agent_has_what_launchd_needs() -> None:
    job = make_job("dev", PY, ENV)
    plist = plistlib.loads(render_plist(job, PurePosixPath("/Users/u/Library/Logs/x.log")).encode())
    assert plist["Label"] == "dev.pyd.start.dev"
    assert plist["ProgramArguments"] == [PY, "-m", "pyd", "start", "-n", "dev"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is False
    # launchd's PATH has no Homebrew (QEMU), and PYD_HOME chooses the instance's home.
    assert plist["EnvironmentVariables"] == {"PATH": ENV["PATH"], "PYD_HOME": ODD}
    assert plist["StandardErrorPath"] == "/Users/u/Library/Logs/x.log"


def test_the_logon_task_has_the_trigger_the_user_and_the_command() -> None:
    job = make_job("dev", r"C:\Users\A&B <x>\pipx\python.exe", {})
    text = render_task(job, r"HOST\A&B")
    assert text.startswith('<?xml version="1.0" encoding="UTF-16"?>')
    root = ET.fromstring(text.encode("utf-16"))
    ns = {"t": TASK_NS}
    assert root.tag == f"{{{TASK_NS}}}Task"
    trigger = root.find("t:Triggers/t:LogonTrigger", ns)
    assert trigger is not None and trigger.findtext("t:UserId", None, ns) == r"HOST\A&B"
    assert root.findtext("t:Principals/t:Principal/t:LogonType", None, ns) == "InteractiveToken"
    assert root.findtext("t:Principals/t:Principal/t:RunLevel", None, ns) == "LeastPrivilege"
    assert root.findtext("t:Actions/t:Exec/t:Command", None, ns) == job.launcher[0]
    assert root.findtext("t:Actions/t:Exec/t:Arguments", None, ns) == "-m pyd start -n dev"
    assert root.findtext("t:Settings/t:ExecutionTimeLimit", None, ns) == "PT0S"


def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)")
    unit = tmp_path / "pyd-dev.service"
    unit.write_text(text)
    # System mode: a user manager cannot start here (no systemd as PID 1); the unit's syntax
    # and its Exec= programs are checked the same way.
    return subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = render_unit(make_job("dev", sys.executable, ENV))
    r = _verify(tmp_path, text)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f'ExecStart="{sys.executable}" "-m" "pyd" "start" "-n" "dev"' in text
    assert 'ExecStop="' in text and "WantedBy=default.target" in text
    # systemd reads the value back as it was: `%` doubled, `"` and `\` escaped, `$` kept.
    assert 'Environment="PYD_HOME=/tmp/a b&<%%$x\\"\'\\\\"' in text
    broken = text.replace(sys.executable, "/nonexistent/python", 1)
    assert _verify(tmp_path, broken).returncode != 0  # the check can fail


def test_commands_per_os() -> None:
    mac = plan("dev", "darwin", PurePosixPath("/Users/u/Library/LaunchAgents/x.plist"), 501)
    assert mac.load[-1] == (
        "launchctl",
        "bootstrap",
        "gui/501",
        "/Users/u/Library/LaunchAgents/x.plist",
    )
    assert mac.probe == ("launchctl", "print", "gui/501/dev.pyd.start.dev")
    assert mac.unload == (("launchctl", "bootout", "gui/501/dev.pyd.start.dev"),)
    linux = plan("dev", "linux", PurePosixPath("/h/.config/systemd/user/pyd-dev.service"), 1000)
    assert ("systemctl", "--user", "enable", "--now", "--no-block", "pyd-dev.service") in linux.load
    assert linux.unload == (("systemctl", "--user", "disable", "pyd-dev.service"),)
    assert all("--now" not in c for c in linux.unload)  # the running instance stays up
    win = plan("dev", "win32", None, 0)
    assert win.load[0] == ("schtasks", "/Create", "/TN", r"\pyd\start-dev", "/XML", XML_FILE, "/F")
    assert win.unload == (("schtasks", "/Delete", "/TN", r"\pyd\start-dev", "/F"),)
    with pytest.raises(ValueError):
        plan("dev", "freebsd", None, 0)


class StandIn:
    """launchctl / systemctl / schtasks: records each command, answers as the OS would."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.ran: list[tuple[str, ...]] = []
        self.loaded = False
        self.task_xml = ""

    def __call__(self, argv: Sequence[str]) -> Ran:
        cmd = tuple(argv)
        self.ran.append(cmd)
        verb = cmd[1] if cmd[0] != "systemctl" else cmd[2]
        if verb in ("bootstrap", "enable"):
            self.loaded = True
        elif verb in ("bootout", "disable"):
            was, self.loaded = self.loaded, False
            return Ran(0 if was or verb == "disable" else 3, "")
        elif verb in ("print", "is-enabled"):
            return Ran(0 if self.loaded else 1, "")
        elif verb == "/Create":
            self.task_xml = Path(cmd[cmd.index("/XML") + 1]).read_bytes().decode("utf-16")
            self.loaded = True
        elif verb == "/Delete":
            self.loaded = False
        elif verb == "/Query":
            return Ran(0, self.task_xml) if self.loaded else Ran(1, "ERROR: not found")
        return Ran(0, "")


def _host(tmp_path: Path, platform: str, run: StandIn, manager_problem: str | None = None) -> Host:
    return Host(platform, tmp_path, {"PATH": "/usr/bin"}, 501, r"HOST\u", PY, run,
                lambda: manager_problem)  # fmt: skip


@pytest.mark.parametrize("platform", ["darwin", "linux", "win32"])
def test_enable_status_disable_round_trip(tmp_path: Path, platform: str) -> None:
    run = StandIn(platform)
    host = _host(tmp_path, platform, run)
    assert not manager.status(host, "dev").enabled
    on = manager.enable(host, "dev")
    assert on.installed and on.loaded and on.current
    if platform != "win32":
        assert Path(on.where).is_file() and Path(on.where).is_relative_to(tmp_path)
    else:
        assert "<LogonTrigger>" in run.task_xml and not list(tmp_path.iterdir())
    assert manager.status(host, "dev").enabled
    before = manager.disable(host, "dev")
    assert before.enabled
    after = manager.status(host, "dev")
    assert not after.installed and not after.loaded
    assert not list(tmp_path.rglob("*.plist")) and not list(tmp_path.rglob("*.service"))


def test_a_job_for_another_pyd_is_reported_as_such(tmp_path: Path) -> None:
    run = StandIn("darwin")
    manager.enable(_host(tmp_path, "darwin", run), "dev")
    moved = Host("darwin", tmp_path, {}, 501, "", "/new/python", run, lambda: None)
    assert not manager.status(moved, "dev").current


def test_a_failing_load_is_an_error_with_the_command_and_a_hint(tmp_path: Path) -> None:
    def refuses(argv: Sequence[str]) -> Ran:
        return (
            Ran(5, "Bootstrap failed: 5: Input/output error") if "bootstrap" in argv else Ran(0, "")
        )

    host = Host("darwin", tmp_path, {}, 501, "", PY, refuses, lambda: None)
    with pytest.raises(PydError) as e:
        manager.enable(host, "dev")
    assert "launchctl bootstrap gui/501" in e.value.message and "Input/output" in e.value.message
    assert "launchctl print" in e.value.hint


def test_without_user_systemd_the_unit_is_written_and_says_why_it_is_not_loaded(
    tmp_path: Path,
) -> None:
    run = StandIn("linux")
    host = _host(tmp_path, "linux", run, manager_problem="no user systemd (test)")
    with pytest.raises(PydError) as e:
        manager.enable(host, "dev")
    assert "not enabled: no user systemd (test)" in e.value.message
    s = manager.status(host, "dev")
    assert s.installed and not s.loaded and s.why_not == "no user systemd (test)"
    manager.disable(host, "dev")
    assert not manager.status(host, "dev").installed
    assert run.ran == []  # systemctl was never asked


def _pyd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env.update(HOME=str(tmp_path), PYD_HOME=str(tmp_path / "pyd-home"), COLUMNS="300")
    return subprocess.run([sys.executable, "-m", "pyd", "autostart", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


@pytest.mark.skipif(sys.platform != "linux", reason="this host's own systemd user unit")
def test_the_real_command_round_trips_on_this_linux(tmp_path: Path) -> None:
    """As far as this machine allows: with a user systemd the unit is enabled for real;
    without one (a container) enable writes it and fails clearly, status says why, and
    disable removes it. Exit codes: status 0 only when installed and loaded."""
    unit = tmp_path / ".config" / "systemd" / "user" / "pyd-rt.service"
    has_manager = manager.user_systemd() is None
    on = _pyd(tmp_path, "enable", "-n", "rt")
    assert unit.is_file()
    assert f'"{sys.executable}" "-m" "pyd" "start" "-n" "rt"' in unit.read_text()
    assert "Traceback" not in on.stderr
    status = _pyd(tmp_path, "status", "-n", "rt")
    if has_manager:
        assert on.returncode == 0 and status.returncode == 0, on.stderr + status.stdout
    else:
        assert on.returncode == 1 and "not enabled: no user systemd" in on.stderr
        assert "hint:" in on.stderr
        assert status.returncode == 3
        assert f"installed: {unit}; not loaded: no user systemd" in status.stdout
    off = _pyd(tmp_path, "disable", "-n", "rt")
    assert off.returncode == 0 and f"removed {unit}" in off.stderr, off.stderr
    assert not unit.exists()
    gone = _pyd(tmp_path, "status", "-n", "rt", "--json")
    assert gone.returncode == 3 and '"installed": false' in gone.stdout
    again = _pyd(tmp_path, "disable", "-n", "rt")
    assert again.returncode == 0 and "nothing to remove" in again.stderr


def test_a_bad_instance_name_is_a_usage_error(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "enable", "-n", "Bad Name")
    assert r.returncode == 2 and "invalid instance name" in r.stderr
    assert not (tmp_path / ".config").exists() and not (tmp_path / "Library").exists()


def test_another_os_is_told_what_is_supported(tmp_path: Path) -> None:
    host = Host("freebsd14", tmp_path, {}, 0, "", PY, StandIn("linux"), lambda: None)
    with pytest.raises(PydError) as e:
        manager.enable(host, "dev")
    assert "not supported on freebsd14" in e.value.message and "launchd" in e.value.hint
    assert not list(tmp_path.iterdir())


def test_a_disabled_logon_task_is_reported_and_still_deleted(tmp_path: Path) -> None:
    run = StandIn("win32")
    host = _host(tmp_path, "win32", run)
    manager.enable(host, "dev")
    run.task_xml = run.task_xml.replace(
        "<Enabled>true</Enabled>\n    <Hidden>", "<Enabled>false</Enabled>\n    <Hidden>"
    )
    s = manager.status(host, "dev")
    assert s.installed and not s.loaded and s.why_not == "the task is disabled"
    manager.disable(host, "dev")
    assert run.ran[-1] == ("schtasks", "/Delete", "/TN", r"\pyd\start-dev", "/F")
    assert not manager.status(host, "dev").installed


@pytest.mark.skipif(sys.platform != "linux", reason="this host's own systemd user unit")
def test_pyd_delete_takes_the_instances_start_at_login_with_it(tmp_path: Path) -> None:
    """Left, it would start a new, empty instance of that name at the next login."""
    unit = tmp_path / ".config" / "systemd" / "user" / "pyd-gone.service"
    _pyd(tmp_path, "enable", "-n", "gone")
    assert unit.is_file()
    config = tmp_path / "pyd-home" / "instances" / "gone" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("")  # an instance never started: nothing else to delete
    env = {**os.environ, "HOME": str(tmp_path), "PYD_HOME": str(tmp_path / "pyd-home")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker")
    r = subprocess.run([sys.executable, "-m", "pyd", "delete", "-f", "-n", "gone"],
                       capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "start at login of 'gone' removed" in r.stderr
    assert not unit.exists()
