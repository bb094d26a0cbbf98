"""`pyd stop` and `pyd delete` do not need a readable config.toml (issue 13, item 8): the
backend that runs the VM is found by asking each one, and the agent is not stopped before
that is known. Backends are fakes; the instance's files are real."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyd.cli.progress import LABELS
from pyd.errors import PydError
from pyd.instance.registry import instance
from pyd.lifecycle import stop as stop_module
from pyd.vm.backends import choice as backend_module
from pyd.vm.backends.base import VMBackend, VMState
from tests.unit.fakebackend import FakeBackend, RecordingProgress

CORRUPT = "cpus = [unclosed\n"


class Recording(RecordingProgress):
    """Phases as the CLI labels them."""

    def begin(self, phase: str) -> None:
        super().begin(LABELS.get(phase, phase))


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Instance "dev" with a data disk and a config.toml that is not TOML."""
    monkeypatch.setenv("PYD_HOME", str(tmp_path))
    root = instance("dev").files.root
    root.mkdir(parents=True)
    (root / "data.qcow2").write_bytes(b"docker's data")
    (root / "config.toml").write_text(CORRUPT)
    return root


def _candidates(monkeypatch: pytest.MonkeyPatch, *backends: FakeBackend) -> None:
    def found(name: str) -> list[VMBackend]:
        return list(backends)

    monkeypatch.setattr(backend_module, "candidate_backends", found)


def test_stop_with_a_corrupt_config_stops_the_vm_its_backend_runs(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qemu, libvirt = FakeBackend(VMState.STOPPED, "qemu"), FakeBackend(VMState.RUNNING, "libvirt")
    _candidates(monkeypatch, qemu, libvirt)
    progress = Recording()
    assert stop_module.stop("dev", progress) is True
    assert (qemu.calls, libvirt.calls) == ([], ["shutdown"])
    assert libvirt.vm is VMState.STOPPED
    assert any("config.toml" in m and "corrupted" in m for m in progress.said), progress.said
    assert (dev / "config.toml").read_text() == CORRUPT  # reported, never rewritten


def test_stop_with_a_corrupt_config_and_libvirt_down_still_stops_qemu(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qemu = FakeBackend(VMState.RUNNING, "qemu")
    _candidates(monkeypatch, qemu, FakeBackend(VMState.RUNNING, "libvirt", broken=True))
    assert stop_module.stop("dev", RecordingProgress()) is True
    assert qemu.calls == ["shutdown"]


def test_stop_with_a_corrupt_config_and_no_vm_says_it_was_not_running(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _candidates(monkeypatch, FakeBackend(VMState.STOPPED), FakeBackend(VMState.ABSENT))
    assert stop_module.stop("dev", RecordingProgress()) is False


def test_delete_with_a_corrupt_config_removes_the_vm_and_every_file(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    qemu = FakeBackend(VMState.STOPPED, "qemu")
    libvirt = FakeBackend(VMState.RUNNING, "libvirt")
    _candidates(monkeypatch, qemu, FakeBackend(VMState.RUNNING, "down", broken=True), libvirt)
    monkeypatch.setattr(stop_module, "remove_context", lambda name: None)
    progress = Recording()
    stop_module.delete("dev", progress)
    assert "VM removed" in progress.phases  # not "VM defined+started"
    assert libvirt.calls == ["kill", "delete"] and libvirt.vm is VMState.ABSENT
    assert qemu.calls == ["kill", "delete"]
    assert not dev.exists()


def test_with_a_readable_config_a_backend_failure_is_reported(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probing is for an unreadable config only: otherwise libvirt being down is the error."""
    (dev / "config.toml").write_text('backend = "libvirt"\n')
    broken = FakeBackend(VMState.RUNNING, "libvirt", broken=True)
    monkeypatch.setattr(backend_module, "backend_for", lambda name: broken)
    with pytest.raises(PydError, match="cannot connect"):
        stop_module.stop("dev", RecordingProgress())
