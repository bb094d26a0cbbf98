"""The SSH connection of `pyd docker` is made while the command is prepared
(pyd.guestdocker.direct.Connecting): its result or its error comes back, and a connection
that is no longer wanted is closed, whenever it arrives."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pyd.errors import PydError
from pyd.guestdocker import direct
from pyd.host.threads import Deadline
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import Instance


class FakeClient:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def _instance(tmp_path: Path) -> Instance:
    return Instance("t", InstanceFiles(tmp_path))


def _connecting(tmp_path: Path, port: int = 22) -> direct.Connecting:
    connecting = direct.Connecting(_instance(tmp_path), port)
    connecting.start()
    return connecting


def test_the_connection_made_meanwhile_is_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient()
    monkeypatch.setattr(direct, "_connect", lambda inst, port: client)
    assert _connecting(tmp_path).result() is client
    assert not client.closed.is_set()


def test_an_error_while_connecting_is_raised_by_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(inst: Instance, port: int) -> FakeClient:
        raise PydError(f"cannot reach the guest on {port}")

    monkeypatch.setattr(direct, "_connect", refuse)
    with pytest.raises(PydError, match="cannot reach the guest on 2222"):
        _connecting(tmp_path, 2222).result()


def test_an_abandoned_connection_is_closed_when_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, release = FakeClient(), threading.Event()

    def slow(inst: Instance, port: int) -> FakeClient:
        release.wait(10)
        return client

    monkeypatch.setattr(direct, "_connect", slow)
    connecting = _connecting(tmp_path)
    connecting.close()  # e.g. the current directory is not shared: the error comes first
    assert not client.closed.is_set()
    release.set()
    assert connecting.join(Deadline(10))
    assert client.closed.is_set()


def test_an_abandoned_connection_already_made_is_closed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient()
    monkeypatch.setattr(direct, "_connect", lambda inst, port: client)
    connecting = _connecting(tmp_path)
    assert connecting.join(Deadline(10))
    connecting.close()
    assert client.closed.is_set()
