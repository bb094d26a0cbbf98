"""`pyd autostart enable|disable|status` at the edge: the job's file written or removed, and
launchctl, systemctl or schtasks run through one seam (`Runner`), so that tests drive every
OS's sequence with a stand-in and Linux's for real."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyd.autostart.job import (
    DARWIN,
    LINUX,
    SUPPORTED,
    WINDOWS,
    Job,
    job_file,
    log_file,
    make_job,
    task_name,
)
from pyd.autostart.plan import XML_FILE, Command, Plan, plan
from pyd.autostart.render import TASK_NS, render_plist, render_task, render_unit
from pyd.errors import PydError
from pyd.host.atomicfile import write_atomic
from pyd.instance.registry import name_option

SYSTEMD_BOOTED = Path("/run/systemd/system")  # sd_booted(3): systemd is PID 1


@dataclass(frozen=True)
class Ran:
    code: int
    output: str  # stdout and stderr


Runner = Callable[[Sequence[str]], Ran]


def run_command(argv: Sequence[str]) -> Ran:
    """The real runner; a missing program is exit 127, as a shell says it."""
    try:
        r = subprocess.run(
            list(argv), capture_output=True, text=True, errors="replace", timeout=120, check=False
        )
    except FileNotFoundError:
        return Ran(127, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Ran(124, f"{argv[0]} did not finish within 120 s")
    return Ran(r.returncode, (r.stdout + r.stderr).strip())


@dataclass(frozen=True)
class Host:
    """What the job depends on here: the OS, the user, the interpreter pyd runs in."""

    platform: str
    home: Path
    env: Mapping[str, str]
    uid: int
    user: str  # Windows: DOMAIN\\user, whose logon starts the task
    executable: str
    run: Runner
    user_manager: Callable[[], str | None]  # Linux: why there is no user systemd (None: there is)


def this_host() -> Host:
    env = dict(os.environ)
    user = f"{env.get('USERDOMAIN', '')}\\{env.get('USERNAME', '')}".lstrip("\\")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Host(
        sys.platform, Path.home(), env, uid, user, sys.executable, run_command, user_systemd
    )


def user_systemd() -> str | None:
    """Why this Linux has no user systemd to load the unit into; None when it has one."""
    if shutil.which("systemctl") is None:
        return "no user systemd (systemctl is not installed)"
    if not SYSTEMD_BOOTED.is_dir():
        return "no user systemd (systemd is not running as PID 1 here: a container or WSL?)"
    return None


@dataclass(frozen=True)
class Status:
    instance: str
    where: str  # the job's file, or the task's name
    installed: bool
    loaded: bool  # macOS: loaded in launchd; Linux: enabled; Windows: the task is enabled
    why_not: str = ""  # why it is not loaded, when it is not
    current: bool = True  # what `enable` would write now (the same pyd, PATH, PYD_HOME)

    @property
    def enabled(self) -> bool:
        return self.installed and self.loaded


def _check(platform: str) -> None:
    if platform not in SUPPORTED:
        raise PydError(
            f"start at login is not supported on {platform}",
            hint="pyd autostart knows macOS (launchd), Linux (systemd) and Windows",
        )


def _job(host: Host, instance: str) -> Job:
    return make_job(instance, host.executable, host.env)


def _text(host: Host, job: Job) -> str:
    if host.platform == DARWIN:
        return render_plist(job, log_file(job.instance, host.home))
    if host.platform == LINUX:
        return render_unit(job)
    return render_task(job, host.user)


def _file(host: Host, instance: str) -> Path | None:
    if host.platform == WINDOWS:
        return None
    return Path(job_file(instance, host.platform, host.home, host.env))


def _plan(host: Host, instance: str) -> Plan:
    return plan(instance, host.platform, _file(host, instance), host.uid)


def _run_all(host: Host, commands: Sequence[Command], p: Plan, what: str) -> None:
    for command in commands:
        r = host.run(command)
        if r.code != 0 and command not in p.may_fail:
            raise PydError(
                f"{what}: `{' '.join(command)}` failed (exit {r.code}): {_tail(r.output)}",
                hint=_hint(host.platform),
            )


def _hint(platform: str) -> str:
    return {
        DARWIN: "`launchctl print gui/$(id -u)` lists what launchd has loaded",
        LINUX: "`systemctl --user status` shows the user's systemd; `journalctl --user` its log",
        WINDOWS: "Task Scheduler (taskschd.msc) shows the task under `pyd`",
    }[platform]


def _tail(output: str, lines: int = 5) -> str:
    return " / ".join(output.splitlines()[-lines:]) or "no output"


def enable(host: Host, instance: str) -> Status:
    """Writes the job and loads it (which also starts the instance now); returns the status."""
    _check(host.platform)
    text = _text(host, _job(host, instance))
    p = _plan(host, instance)
    path = _file(host, instance)
    if path is None:  # Windows: schtasks reads the XML from a file of its own
        _create_task(host, text, p)
        return status(host, instance)
    write_atomic(path, text, new_mode=0o644)
    if host.platform == DARWIN:
        Path(log_file(instance, host.home)).parent.mkdir(parents=True, exist_ok=True)
    if host.platform == LINUX:
        problem = host.user_manager()
        if problem is not None:
            raise PydError(
                f"wrote {path}, but it is not enabled: {problem}",
                hint="start at login needs a systemd user session (most desktop Linux "
                "systems have one); `pyd autostart disable"
                f"{name_option(instance)}` removes the file",
            )
    _run_all(host, p.load, p, f"{path} is written but not loaded")
    return status(host, instance)


def _create_task(host: Host, text: str, p: Plan) -> None:
    # Task Scheduler's own encoding for task XML (its exports are UTF-16 with a BOM).
    fd, name = tempfile.mkstemp(prefix="pyd-task-", suffix=".xml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-16"))
        commands = [tuple(name if w == XML_FILE else w for w in c) for c in p.load]
        _run_all(host, commands, p, "the logon task is not registered or not started")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def disable(host: Host, instance: str) -> Status:
    """Unloads and removes the job (the running instance is left running); returns the
    status before, so the caller can say what was there."""
    _check(host.platform)
    before = status(host, instance)
    p = _plan(host, instance)
    path = _file(host, instance)
    no_manager = host.platform == LINUX and host.user_manager() is not None
    if host.platform == WINDOWS:
        if before.installed:  # a disabled task is deleted too
            _run_all(host, p.unload, p, "the logon task is still there")
    elif before.loaded and not no_manager:
        _run_all(host, p.unload, p, "start at login is still on")
    if path is not None and path.exists():
        path.unlink()
        if not no_manager:
            _run_all(host, p.after_removal, p, f"{path} is removed")
    return before


def status(host: Host, instance: str) -> Status:
    _check(host.platform)
    p = _plan(host, instance)
    path = _file(host, instance)
    expected = _text(host, _job(host, instance))
    if path is None:
        return _task_status(host, instance, p, expected)
    installed = path.is_file()
    current = not installed or _read(path) == expected
    if host.platform == LINUX:
        problem = host.user_manager()
        if problem is not None:
            return Status(instance, str(path), installed, False, problem, current)
    loaded = host.run(p.probe).code == 0
    why = "" if loaded else ("not enabled" if host.platform == LINUX else "not loaded in launchd")
    return Status(instance, str(path), installed, loaded, why, current)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _task_status(host: Host, instance: str, p: Plan, expected: str) -> Status:
    r = host.run(p.probe)
    where = task_name(instance)
    if r.code != 0:
        return Status(instance, where, False, False, "no such task")
    registered = task_fields(r.output)
    loaded = registered.get("Enabled", "true") == "true"
    wanted = task_fields(expected)
    current = all(registered.get(k) == wanted.get(k) for k in ("Command", "Arguments"))
    return Status(instance, where, True, loaded, "" if loaded else "the task is disabled", current)


def task_fields(xml: str) -> dict[str, str]:
    """The settings of a task's XML that status reports: Enabled, Command, Arguments."""
    try:
        root = ET.fromstring(xml.encode("utf-16"))
    except ET.ParseError:
        return {}
    ns = {"t": TASK_NS}
    found = {
        "Enabled": root.findtext("t:Settings/t:Enabled", None, ns),
        "Command": root.findtext("t:Actions/t:Exec/t:Command", None, ns),
        "Arguments": root.findtext("t:Actions/t:Exec/t:Arguments", None, ns),
    }
    return {k: v.strip() for k, v in found.items() if v is not None}
