"""The job's file per OS, each from its one template (package data, pyd/autostart/templates):
a launchd plist, a systemd user unit, a Task Scheduler XML. Pure; values are escaped by the
format's own writer (plistlib, ElementTree) or by systemd's quoting rules, so a path with
spaces, quotes, `%` or `&` cannot break the file."""

from __future__ import annotations

import plistlib
import string
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path, PurePath

from pyd.autostart.job import Job, label

TEMPLATES = Path(__file__).resolve().parent / "templates"
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
TASK_DECLARATION = '<?xml version="1.0" encoding="UTF-16"?>\n'


def _template(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def render_plist(job: Job, log: PurePath) -> str:
    """The LaunchAgent: runs `pyd start -n NAME` at each login (RunAtLoad)."""
    plist = plistlib.loads(_template("launchd.plist").encode())
    plist["Label"] = label(job.instance)
    plist["ProgramArguments"] = list(job.command("start"))
    plist["EnvironmentVariables"] = dict(job.env)
    plist["StandardOutPath"] = plist["StandardErrorPath"] = str(log)
    return plistlib.dumps(plist, sort_keys=False).decode()


def systemd_quote(word: str, exec_line: bool = True) -> str:
    """One word of an Exec= (or, `exec_line` False, Environment=) line: in double quotes,
    with `\\` and `"` escaped and `%` (specifiers) doubled; on an Exec= line `$` too (there
    it names a variable), so systemd takes each as it is."""
    if any(c in word for c in "\n\r"):
        raise ValueError(f"a line break cannot be in a systemd unit: {word!r}")
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + (escaped.replace("$", "$$") if exec_line else escaped) + '"'


def render_unit(job: Job) -> str:
    """The systemd user unit: a oneshot that stays active, so the instance stops cleanly
    (`pyd stop`) when the user's manager ends at logout."""

    def line(words: Sequence[str]) -> str:
        return " ".join(map(systemd_quote, words))

    environment = "\n".join(
        "Environment=" + systemd_quote(f"{k}={v}", exec_line=False) for k, v in job.env
    )
    return string.Template(_template("systemd.service")).substitute(
        name=job.instance,
        environment=environment,
        start=line(job.command("start")),
        stop=line(job.command("stop")),
    )


def render_task(job: Job, user: str) -> str:
    """The Task Scheduler task (schema 1.2, Windows 7 and later): `pyd start -n NAME` at
    `user`'s logon, as that user, without elevation."""
    ET.register_namespace("", TASK_NS)
    root = ET.fromstring(_template("task.xml").encode("utf-16"))

    def set_text(path: str, value: str) -> None:
        for element in root.iterfind(path.replace("/", f"/{{{TASK_NS}}}").lstrip("/"), {}):
            element.text = value

    command = job.command("start")
    set_text("/RegistrationInfo/Description", f"pyd: start the instance {job.instance} at logon")
    set_text("/Triggers/LogonTrigger/UserId", user)
    set_text("/Principals/Principal/UserId", user)
    set_text("/Actions/Exec/Command", command[0])
    set_text("/Actions/Exec/Arguments", subprocess.list2cmdline(command[1:]))
    ET.indent(root, "  ")
    return TASK_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"
