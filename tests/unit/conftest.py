"""Fixtures of the `pyd docker` tests (test_guestdocker_run.py, test_agent_exec.py): a
stand-in guest per module (tests/unit/fakeguest.py) and a connection to it per test. A
module's own fixture of the same name wins over these."""

from __future__ import annotations

from collections.abc import Iterator

import paramiko
import pytest

from tests.unit.fakeguest import Guest, connected, running_guest

WATCHDOG = 120.0  # no test may hang: after this its SSH connection is cut


@pytest.fixture(scope="module")
def guest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guest]:
    with running_guest(tmp_path_factory.mktemp("guest")) as g:
        yield g


@pytest.fixture
def transport(guest: Guest) -> Iterator[paramiko.Transport]:
    with connected(guest, WATCHDOG) as t:
        yield t
