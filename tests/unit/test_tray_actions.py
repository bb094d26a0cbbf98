"""The tray's action runner (pyd/tray/actions.py) with the real `pyd` command: a lifecycle
action shows as pending while its `pyd` runs, at most one per instance, and its output and
exit code land in the tray's log; `pyd tray --invoke` refuses when no tray runs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pyd.errors import UsageError
from pyd.tray.actions import ActionRunner
from pyd.tray.app import request_invoke
from pyd.tray.model import Action, Verb
from tests.unit.polling import until


def test_a_stop_runs_pyd_once_and_logs_what_it_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    done = threading.Event()
    log = tmp_path / "tray.log"
    runner = ActionRunner(log, lambda name: tmp_path / name, done.set)
    runner.run(Action(Verb.STOP, "ghost"), {})
    runner.run(Action(Verb.START, "ghost"), {})  # ignored: ghost's stop still runs
    assert runner.pending() == {"ghost": Verb.STOP}
    assert done.wait(60)
    until(lambda: not runner.pending(), 5, what="pending cleared")
    text = log.read_text()
    assert text.startswith("$ pyd stop -n ghost\n")
    assert "there is no instance named 'ghost'" in text and "(exit 2)" in text
    assert text.count("$ pyd") == 1
    assert log.stat().st_mode & 0o077 == 0


def test_invoke_without_a_running_tray_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="no pyd tray is running"):
        request_invoke("default/stop")
    assert not (tmp_path / "tray" / "invoke").exists()
