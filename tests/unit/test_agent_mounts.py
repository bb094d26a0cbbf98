"""The agent's share workers without a guest: what they report while SSH is down, and the
log line for a container that uses a share that is not mounted."""

from __future__ import annotations

import logging
import threading
import time

import paramiko
import pytest

from pyd.agent.session import SSHDown
from pyd.host.threads import Deadline
from pyd.mounts.sftp_host import BUILTIN, WALK, SftpServer
from pyd.mounts.shares import Share
from pyd.mounts.state import MountState, MountStatus
from pyd.mounts.worker import UNMOUNT_SSH_WAIT, MountManager

from .polling import until

SHARE = Share("/home/me", "/home/me", True)


def _no_ssh(wait: float) -> paramiko.Transport:
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
        waiting = MountStatus("/home/me", "/home/me", True, MountState.MOUNTING, "waiting for SSH")
        until(lambda: reports[-1] == (waiting,), what="the share waits for SSH")
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


def _mount_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mount ")]


def test_close_does_not_wait_and_join_ends_every_worker() -> None:
    manager, _ = _manager()
    manager.set_shares([SHARE, Share("/data", "/mnt/data", False)])
    assert len(_mount_threads()) == 2
    t0 = time.monotonic()
    manager.close()
    assert time.monotonic() - t0 < 0.5
    assert manager.join(Deadline(5))
    assert _mount_threads() == []


def test_no_share_starts_once_closed() -> None:
    manager, reports = _manager()
    manager.start()
    manager.close()
    manager.set_shares([SHARE])
    assert _mount_threads() == []
    assert reports == []
    assert manager.join(Deadline(1))


def test_a_removed_share_is_stopped_and_unmounted_in_the_guest() -> None:
    asked: list[float] = []

    def no_ssh(wait: float) -> paramiko.Transport:
        asked.append(wait)
        return _no_ssh(wait)

    manager = MountManager(no_ssh, SftpServer(BUILTIN, WALK), lambda r: None)
    try:
        manager.set_shares([SHARE])
        until(lambda: asked, what="the worker asks for SSH")
        manager.set_shares([])
        assert _mount_threads() == []  # its worker stopped before set_shares returned
        assert asked[-1] == UNMOUNT_SSH_WAIT  # then the unmount asked for SSH
    finally:
        manager.close()
