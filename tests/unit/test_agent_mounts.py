"""The agent's share workers without a guest: what they report while SSH is down, and the
log line for a container that uses a share that is not mounted."""

from __future__ import annotations

import logging
import threading
import time

import paramiko
import pytest

from pyd.agent.session import SSHDown
from pyd.agent.status_file import MOUNTING, MountStatus
from pyd.mounts.sftp_host import BUILTIN, WALK, SftpServer
from pyd.mounts.shares import Share
from pyd.mounts.worker import MountManager

SHARE = Share("/home/me", "/home/me", True)


def _no_ssh(wait: float) -> paramiko.Transport:
    time.sleep(min(wait, 0.05))
    raise SSHDown("the SSH connection to the guest is down")


def _manager() -> tuple[MountManager, list[tuple[MountStatus, ...]]]:
    reports: list[tuple[MountStatus, ...]] = []
    lock = threading.Lock()

    def report(r: tuple[MountStatus, ...]) -> None:
        with lock:
            reports.append(r)

    return MountManager(_no_ssh, SftpServer(BUILTIN, WALK), report), reports


def test_a_share_waits_as_mounting_while_ssh_is_down() -> None:
    manager, reports = _manager()
    try:
        manager.set_shares([SHARE])
        time.sleep(0.3)
        waiting = MountStatus("/home/me", "/home/me", True, MOUNTING, "waiting for SSH")
        assert reports[-1] == (waiting,)
        manager.set_shares([])
        assert reports[-1] == ()
    finally:
        manager.close()


def test_a_container_on_a_share_that_is_down_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager, _ = _manager()
    containers = [
        {"Names": ["/web"], "State": "running",
         "Mounts": [{"Type": "bind", "Source": "/home/me/src", "Destination": "/src"}]},
        {"Names": ["/db"], "State": "running",
         "Mounts": [{"Type": "bind", "Source": "/srv/db", "Destination": "/db"}]},
    ]  # fmt: skip
    try:
        manager.set_shares([SHARE])
        with caplog.at_level(logging.ERROR, logger="pyd.agent"):
            manager.check_containers(containers)
            manager.check_containers(containers)
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert "container web uses /home/me/src" in errors[0]
        assert "share /home/me is not mounted (waiting for SSH)" in errors[0]
    finally:
        manager.close()
