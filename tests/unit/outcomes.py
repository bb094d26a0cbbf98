"""What a user must get back from pyd, checked the same way by every test: a refusal is a
UsageError (exit code 2) with a hint; a command run as the user runs it exits 0, or 2 with a
message and a hint and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

import pyd
from pyd.errors import UsageError

# The package under test, however this run found it: a command may run in another directory.
_PACKAGE_ROOT = str(Path(pyd.__file__).resolve().parents[1])


def refused(call: Callable[[], object]) -> UsageError:
    """The UsageError that `call` raises; every refusal says what to do next."""
    with pytest.raises(UsageError) as e:
        call()
    assert e.value.exit_code == 2 and e.value.hint
    return e.value


def run_pyd(
    env: Mapping[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pyd ARGS` with `env` over this environment, wide enough for any table."""
    path = os.pathsep.join([_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")])
    full = {**os.environ, "PYTHONPATH": path, "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=full, cwd=cwd
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def usage(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "hint:" in r.stderr
    return r.stderr
