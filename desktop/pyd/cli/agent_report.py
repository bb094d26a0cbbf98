"""What the host agent reports on an instance's forwards and shares, and how `pyd port ls`
and `pyd mount ls` print it. The CLI holds no forwards or mounts itself: while an agent runs,
its status file is the truth; while none runs, a listing shows what config.toml asks for.
A status file left by an agent that has gone is ignored: it describes nothing that exists."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import typer

from pyd.agent.status_file import AgentStatus
from pyd.cli.render import err_console, out_console, print_columns
from pyd.instance.registry import Instance, existing
from pyd.lifecycle.agent_proc import agent_running, agent_status

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]

STOPPED = "stopped"  # the instance's agent is not running
UNKNOWN = "unknown"  # the agent runs but has not reported on this yet


@dataclass(frozen=True)
class AgentReport:
    inst: Instance
    running: bool  # whether a host agent runs for the instance
    status: AgentStatus | None  # what it last wrote; None if none runs or it wrote nothing

    def unreported(self) -> tuple[str, str]:
        """The state and detail of something configured that the agent has not reported on."""
        if self.running:
            return UNKNOWN, "the host agent has not reported on it yet"
        return STOPPED, ""


def agent_report(name: str) -> AgentReport:
    """The report on the existing instance `name`."""
    inst = existing(name)
    running = agent_running(inst.files)
    return AgentReport(inst, running, agent_status(inst.files) if running else None)


def print_listing(
    items: Sequence[Any],
    table: Callable[[Sequence[Any]], list[list[str]]],
    as_json: bool,
    report: AgentReport,
    when_stopped: str,
) -> None:
    """`items` (status dataclasses) as JSON, or as `table` makes them into rows; then, when
    no agent runs for the instance, `when_stopped`: what the listing shows then."""
    if as_json:
        out_console.print_json(json.dumps([asdict(i) for i in items]))
        return
    print_columns(table(items))
    if not report.running:
        err_console.print(
            f"{report.inst.name!r} is not running (no host agent): {when_stopped}", soft_wrap=True
        )
