"""`pyd docker ARGS` and `pyd compose ARGS`: docker commands for the instance, through the
host's docker CLI when there is one, else the guest's over SSH (pyd.guestdocker).

Their arguments reach docker exactly as typed: click never parses them (PassThrough), so
docker's own `--help`, `-n`, `--name` and `--` are docker's. pyd's options come first:
`pyd docker -n dev --via-guest -- ps` (see pyd.cli.docker_launch.parse_invocation).
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand

SETTINGS: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}


class PassThrough(TyperCommand):
    """A command whose arguments are all passed on raw, in ctx.args. (click's parser, even
    told to ignore unknown options, would still take `--help` and drop a `--`.)"""

    # ctx is the click Context of typer's own copy of click, which it does not export.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        super().parse_args(ctx, [])
        raw = list(args)
        ctx.args = raw
        return raw


def docker(ctx: typer.Context) -> None:
    """Run docker in an instance: pyd docker [-n NAME] [--via-guest] [--] ARGS...

    Uses this machine's docker CLI with pyd's context when there is one (--via-guest: the
    guest's CLI even then). In the guest, the command runs in the directory that shows the
    current one through the shares; stdin, stdout, stderr, the exit code and a terminal
    (-it) behave as with a local docker.
    """
    _run(ctx.args, "docker")


def compose(ctx: typer.Context) -> None:
    """Run docker compose in an instance: pyd compose [-n NAME] [--via-guest] [--] ARGS...

    Like `pyd docker compose ARGS`; in the guest, `docker compose` (or docker-compose), also
    when this machine's docker CLI has no compose plugin.
    """
    _run(ctx.args, "compose")


def _run(args: list[str], command: str) -> None:
    from pyd.cli.docker_launch import parse_invocation, run_docker
    from pyd.guestdocker.tools import TOOLS

    raise typer.Exit(run_docker(parse_invocation(args), TOOLS[command]))
