"""`backend = "auto"` against the real libvirtd of this machine (packaging/linux/start-libvirt
runs it): libvirt where the daemon answers, QEMU directly where it does not. No VM boots:
`pyd status` of an instance that never started says which backend and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

SYSTEM_URI = "qemu:///system"
NOWHERE = "qemu+unix:///system?socket=/nonexistent"


def _status(home: Path, **env: str) -> dict[str, object]:
    full = {k: v for k, v in os.environ.items() if k != "LIBVIRT_DEFAULT_URI"}
    full.update(PYD_HOME=str(home), PYD_CACHE_DIR=str(home / "cache"), **env)
    pyd = [sys.executable, "-m", "pyd"]
    made = subprocess.run(
        [*pyd, "config", "set", "--create", "cpus", "2", "-n", "auto-b"], env=full, check=False
    )
    assert made.returncode == 0
    r = subprocess.run(
        [*pyd, "status", "--json", "-n", "auto-b"],
        env=full,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    shown: dict[str, object] = json.loads(r.stdout)
    return shown


def test_auto_picks_libvirt_where_its_daemon_answers(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("pyd uses qemu:///system as root only")
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        libvirt.open(SYSTEM_URI).close()
    except libvirt.libvirtError as e:
        pytest.fail(f"libvirtd does not answer ({e}); start it: packaging/linux/start-libvirt")
    shown = _status(tmp_path)
    assert (shown["backend"], shown["backend_reason"]) == (
        "libvirt",
        f"its daemon answers at {SYSTEM_URI}",
    )


def test_auto_picks_qemu_where_libvirt_does_not_answer(tmp_path: Path) -> None:
    shown = _status(tmp_path, LIBVIRT_DEFAULT_URI=NOWHERE)
    assert shown["backend"] == "qemu"
    assert str(shown["backend_reason"]).startswith(f"libvirtd does not answer at {NOWHERE}")
