"""`pyd doctor [--json] [-n NAME]`, and the checks `pyd start` adds to its error."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from pyd.cli.render import out_console
from pyd.config.settings import DEFAULT_INSTANCE
from pyd.doctor.checks import Check, all_checks, exit_code, start_fixes
from pyd.errors import PydError, UsageError
from pyd.instance.registry import instance


def doctor(
    name: Annotated[str, typer.Option("--name", "-n", help="instance name")] = DEFAULT_INSTANCE,
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON")] = False,
) -> None:
    """Check what pyd needs on this machine (QEMU, accelerator, libvirt, ssh, disk space,
    docker CLI and context, a loopback port); each failing check prints the command that
    fixes it. Exits 1 when a required check fails (warnings do not)."""
    from pyd.doctor.probes import gather

    checks = all_checks(gather(instance(name).name))
    if as_json:
        out_console.print_json(json.dumps([c.to_json() for c in checks]))
    else:
        for check in checks:
            _print(check)
    raise typer.Exit(exit_code(checks))


def _print(check: Check) -> None:
    mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]" if check.required else "[yellow]warn[/]"
    out_console.print(f"{mark} {escape(check.name)}: {escape(check.detail)}", soft_wrap=True)
    if not check.ok and check.fix:
        out_console.print(f"     fix: {escape(check.fix)}", soft_wrap=True)


def add_doctor_fixes(error: PydError, name: str) -> None:
    """Appends to a failed `pyd start`'s hint what the doctor finds wrong that can make a
    start fail (nothing when all is well). The original error stays as it was otherwise, and
    this never raises: a failing probe must not hide the start's own error."""
    if isinstance(error, UsageError):
        return  # bad input: the host is not the problem
    try:
        from pyd.doctor.probes import gather

        lines = start_fixes(all_checks(gather(name)))
    except Exception:
        return
    if lines:
        found = "pyd doctor finds:" + "".join(f"\n  {line}" for line in lines)
        error.hint = f"{error.hint}\n{found}" if error.hint else found
