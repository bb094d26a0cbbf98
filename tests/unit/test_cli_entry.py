"""The `pyd` entry point: `pyd docker` and `pyd compose` start without typer (pyd.cli.entry),
with the same error boundary as every other command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from pyd.cli.entry import alone, exit_status


def _pyd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYD_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "pyd", *args],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


def _imported(stderr: str) -> list[str]:
    """The modules imported, in the order their imports finished."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return [line.rsplit("|", 1)[1].strip() for line in lines]


def test_docker_runs_without_typer_and_fails_as_every_command_does(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "docker", "-n", "nosuch", "--via-guest", "version")
    assert r.returncode == 2
    assert "error: there is no instance named 'nosuch'" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr
    imported = _imported(r.stderr)
    assert not {"pyd.cli.main", "pyd.cli.docker_cmd", "invoke.tasks"} & set(imported)
    # typer only comes with the printing of the error (pyd.cli.render), after the command ran.
    assert imported.index("typer") > imported.index("pyd.cli.docker_launch")


def test_compose_and_the_global_debug_flag_take_the_same_path(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "--debug", "compose", "-n", "nosuch", "version")
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "there is no instance named 'nosuch'" in r.stderr
    assert "typer" not in _imported(r.stderr)  # a traceback needs no printing of pyd's


def test_every_other_command_is_typers(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "version")
    assert r.returncode == 0 and r.stdout.startswith("pyd ")
    assert {"typer", "pyd.cli.main"} <= set(_imported(r.stderr))
    r = _pyd(tmp_path, "--help")
    assert r.returncode == 0
    assert "docker" in r.stdout and "compose" in r.stdout and "shim" in r.stdout


def test_closed_standard_descriptors_get_the_null_device() -> None:
    """pyd docker's first step (pyd.cli.entry): else its next socket would take number 0."""
    probe = (
        "import os, socket\n"
        "from pyd.guestdocker.streams import open_standard_fds\n"
        "open_standard_fds()\n"
        "s = socket.socket()\n"
        "null = os.stat(os.devnull).st_rdev\n"
        "print(s.fileno() > 2, [os.fstat(fd).st_rdev == null for fd in (0, 2)])\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       preexec_fn=lambda: (os.close(0), os.close(2)), timeout=60)  # fmt: skip
    assert r.stdout == "True [True, True]\n"


def test_the_exit_status_is_pythons_for_each_kind_of_exit_code() -> None:
    assert exit_status(None) == (0, None)
    assert exit_status(3) == (3, None)
    assert exit_status("boom") == (1, "boom")  # Python prints the message and exits 1


def test_a_command_leaves_at_once_only_when_no_other_thread_would_run_on() -> None:
    assert alone()
    done = threading.Event()
    worker = threading.Thread(target=done.wait)
    worker.start()
    try:
        assert not alone()  # a normal exit waits for it: so does pyd
    finally:
        done.set()
        worker.join()


def test_a_command_that_leaves_at_once_still_writes_all_of_its_output(tmp_path: Path) -> None:
    """Skipping the interpreter's teardown (entry.leave_now) keeps what a normal exit does
    that matters: output piped to a slow reader and its exit status arrive whole."""
    r = _pyd(tmp_path, "--help")
    assert r.returncode == 0 and r.stdout.rstrip().endswith("╯")
    r = _pyd(tmp_path, "status", "-n", "nosuch")
    assert r.returncode != 0 and "no instance named 'nosuch'" in r.stderr
