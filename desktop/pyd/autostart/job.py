"""What `pyd autostart` registers for one instance, and the names and paths each OS gives it.
Pure: the platform, home directory and environment are parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath

DARWIN, LINUX, WINDOWS = "darwin", "linux", "win32"
SUPPORTED = (DARWIN, LINUX, WINDOWS)
# What the job takes from the shell that enables it: launchd and systemd start it with a
# bare PATH (no Homebrew or ~/.local/bin, so no QEMU), and without PYD_HOME it would start
# another home's instance. Task Scheduler gives a task the user's logon environment instead.
CARRIED_ENV = ("PATH", "PYD_HOME", "PYD_CACHE_DIR", "DOCKER_CONFIG")


@dataclass(frozen=True)
class Job:
    instance: str
    launcher: tuple[str, ...]  # the installed pyd: (python, "-m", "pyd")
    env: tuple[tuple[str, str], ...] = ()

    def command(self, verb: str) -> tuple[str, ...]:
        return (*self.launcher, verb, "-n", self.instance)


def make_job(instance: str, executable: str, env: Mapping[str, str]) -> Job:
    """The job for `instance`, run by the interpreter pyd runs in now (`sys.executable`),
    which keeps working whatever PATH holds at login."""
    carried = tuple((k, env[k]) for k in CARRIED_ENV if env.get(k))
    return Job(instance, (executable, "-m", "pyd"), carried)


def label(instance: str) -> str:
    """launchd's job label (reverse DNS, as pyd's libvirt namespace)."""
    return f"dev.pyd.start.{instance}"


def unit_name(instance: str) -> str:
    return f"pyd-{instance}.service"


def task_name(instance: str) -> str:
    """Task Scheduler's path: a `pyd` folder keeps pyd's tasks together."""
    return f"\\pyd\\start-{instance}"


def job_file(instance: str, platform: str, home: PurePath, env: Mapping[str, str]) -> PurePath:
    """Where the job's file goes on macOS and Linux (on Windows, Task Scheduler keeps it:
    there is none of pyd's)."""
    if platform == DARWIN:
        return home / "Library" / "LaunchAgents" / f"{label(instance)}.plist"
    if platform == LINUX:
        config = env.get("XDG_CONFIG_HOME") or str(home / ".config")
        return type(home)(config) / "systemd" / "user" / unit_name(instance)
    raise ValueError(f"no job file on {platform}")


def log_file(instance: str, home: PurePath) -> PurePath:
    """macOS: where launchd writes `pyd start`'s output (systemd has the journal, Task
    Scheduler its history)."""
    return home / "Library" / "Logs" / "pyd" / f"autostart-{instance}.log"
