"""`pyd stop` and `pyd delete` (lifecycle.stop) through a fake VM backend and a fake host
agent: the order of things, a VM that ignores the power button, and what delete removes.
A corrupt config.toml is test_stop_unreadable.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyd.dockercli.context import current_context, ensure_context
from pyd.instance.registry import instance
from pyd.lifecycle import stop as stop_module
from pyd.vm.backends.base import VMBackend, VMState
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress

NAME = "dev"


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Instance "dev" (a config and a data disk) in a private PYD_HOME and docker config."""
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    root = instance(NAME).files.root
    root.mkdir(parents=True)
    (root / "config.toml").write_text('backend = "qemu"\n')
    (root / "data.qcow2").write_bytes(b"docker's data")
    return root


def _runs_on(monkeypatch: pytest.MonkeyPatch, vm: FakeBackend) -> None:
    def configured(name: str) -> tuple[list[VMBackend], str]:
        return [vm], ""

    monkeypatch.setattr(stop_module, "backends_to_stop", configured)


def _pair(vm_state: VMState) -> tuple[FakeBackend, FakeAgent]:
    """A VM and a running agent that write to one list of calls, in the order made."""
    vm, agent = FakeBackend(vm_state), FakeAgent(running=True)
    agent.calls = vm.calls
    return vm, agent


def test_stop_stops_the_agent_then_powers_the_vm_off(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, agent = _pair(VMState.RUNNING)
    _runs_on(monkeypatch, vm)
    progress = RecordingProgress()
    assert stop_module.stop(NAME, progress, agent=agent) is True
    assert vm.calls == ["stop", "shutdown"] and vm.vm is VMState.STOPPED
    assert progress.phases == ["agent", "shutdown"]
    assert vm.shutdown_timeouts == [stop_module.SHUTDOWN_TIMEOUT]


def test_a_vm_that_ignores_the_power_button_is_forced_off_after_the_timeout(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, agent = _pair(VMState.RUNNING)
    vm.ignores_button = True
    _runs_on(monkeypatch, vm)
    assert stop_module.stop(NAME, RecordingProgress(), timeout=0.5, agent=agent) is True
    assert vm.shutdown_timeouts == [0.5]  # the caller's timeout reaches the backend
    assert vm.calls == ["stop", "shutdown", "forced"] and vm.vm is VMState.STOPPED
    assert (dev / "data.qcow2").read_bytes() == b"docker's data"


def test_a_paused_vm_is_powered_off_too(dev: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm, agent = _pair(VMState.PAUSED)
    _runs_on(monkeypatch, vm)
    assert stop_module.stop(NAME, RecordingProgress(), agent=agent) is True
    assert vm.calls == ["stop", "shutdown"]


@pytest.mark.parametrize("state", [VMState.STOPPED, VMState.ABSENT])
def test_stopping_a_vm_that_does_not_run_says_so_and_still_stops_the_agent(
    dev: Path, monkeypatch: pytest.MonkeyPatch, state: VMState
) -> None:
    vm, agent = _pair(state)
    _runs_on(monkeypatch, vm)
    assert stop_module.stop(NAME, RecordingProgress(), agent=agent) is False
    assert vm.calls == ["stop"]  # a stale agent goes, the VM is left alone


def test_delete_removes_the_vm_every_file_and_the_context(
    dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = instance("other").files.root
    other.mkdir(parents=True)
    (other / "data.qcow2").write_bytes(b"not dev's")
    ensure_context("pyd-dev", "unix:///dev.sock", "pyd instance dev", make_current=True)
    vm, agent = _pair(VMState.RUNNING)
    _runs_on(monkeypatch, vm)
    stop_module.delete(NAME, RecordingProgress(), agent=agent)
    assert vm.calls == ["stop", "kill", "delete"] and vm.vm is VMState.ABSENT
    assert not dev.exists()
    assert current_context() == "default"  # docker falls back to its own
    assert not any((tmp_path / "docker" / "contexts" / "meta").iterdir())
    assert (other / "data.qcow2").read_bytes() == b"not dev's"


def test_delete_of_a_vm_never_defined_removes_the_files(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, agent = _pair(VMState.ABSENT)
    _runs_on(monkeypatch, vm)
    stop_module.delete(NAME, RecordingProgress(), agent=agent)
    assert vm.calls == ["stop", "kill"]  # nothing to undefine
    assert not dev.exists()
