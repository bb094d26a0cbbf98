"""The commands `pyd autostart` runs per OS, as data (pure: the platform and the user's id
are parameters), so tests check them for every OS without running launchctl, systemctl or
schtasks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from pyd.autostart.job import DARWIN, LINUX, WINDOWS, label, task_name, unit_name

Command = tuple[str, ...]
XML_FILE = "{task-xml}"  # in a Windows command: the file the task's XML was written to


@dataclass(frozen=True)
class Plan:
    load: tuple[Command, ...]  # after the file is written: register, and start it now
    unload: tuple[Command, ...]  # before the file is removed
    after_removal: tuple[Command, ...]  # once it is gone
    probe: Command  # exit 0: loaded (macOS), enabled (Linux), the task exists (Windows)
    may_fail: frozenset[Command] = frozenset()  # a failure here says nothing (not loaded yet)


def plan(instance: str, platform: str, job_file: PurePath | None, uid: int) -> Plan:
    if platform == DARWIN:
        domain = f"gui/{uid}"
        service = f"{domain}/{label(instance)}"
        bootout: Command = ("launchctl", "bootout", service)
        return Plan(
            # A job loaded before is booted out first: bootstrap refuses a loaded label.
            # RunAtLoad starts it at once.
            load=(bootout, ("launchctl", "bootstrap", domain, str(job_file))),
            unload=(bootout,),
            after_removal=(),
            probe=("launchctl", "print", service),
            may_fail=frozenset({bootout}),
        )
    if platform == LINUX:
        unit = unit_name(instance)
        reload: Command = ("systemctl", "--user", "daemon-reload")
        return Plan(
            # --no-block: the start (maybe an image build) goes on after this returns.
            load=(reload, ("systemctl", "--user", "enable", "--now", "--no-block", unit)),
            # Not --now: turning start-at-login off leaves the running instance alone.
            unload=(("systemctl", "--user", "disable", unit),),
            after_removal=(reload,),
            probe=("systemctl", "--user", "is-enabled", "--quiet", unit),
        )
    if platform == WINDOWS:
        task = task_name(instance)
        return Plan(
            load=(
                ("schtasks", "/Create", "/TN", task, "/XML", XML_FILE, "/F"),
                ("schtasks", "/Run", "/TN", task),
            ),
            unload=(("schtasks", "/Delete", "/TN", task, "/F"),),
            after_removal=(),
            probe=("schtasks", "/Query", "/TN", task, "/XML"),
        )
    raise ValueError(f"start at login is not supported on {platform}")
