"""`pyd stop` and `pyd delete` (lifecycle.stop) through a fake VM backend and a fake host
agent: the order of things, a VM that ignores the power button, and what delete removes.
A corrupt config.toml is test_stop_unreadable.py's."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pyd.config.machine import Accel
from pyd.dockercli.context import current_context, ensure_context
from pyd.image.prune import USERS_DIR, record_use, recorded_uses
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import instance
from pyd.instance.state import InstanceState, save_state
from pyd.lifecycle import stop as stop_module
from pyd.lifecycle.guest_power import SSHGuestPower
from pyd.ssh.keys import generate_keypair, write_keypair
from pyd.vm.backends.base import VMBackend, VMState
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress
from tests.unit.fakeguest import running_guest
from tests.unit.sshserver import host_keypair

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


class FakeGuest:
    """lifecycle.guest_power.GuestPower for `vm`'s guest: "obeys" powers the VM off, "hangs"
    accepts and stays up, "unreachable" cannot be asked (no SSH)."""

    def __init__(self, vm: FakeBackend, behaviour: str) -> None:
        self.vm, self.behaviour = vm, behaviour

    def poweroff(self, files: InstanceFiles) -> bool:
        self.vm.calls.append("ssh-poweroff")
        if self.behaviour == "obeys":
            self.vm.vm = VMState.STOPPED
        return self.behaviour != "unreachable"


def test_a_guest_that_answers_ssh_powers_itself_off_without_the_button(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, agent = _pair(VMState.RUNNING)
    _runs_on(monkeypatch, vm)
    guest = FakeGuest(vm, "obeys")
    assert stop_module.stop(NAME, RecordingProgress(), agent=agent, guest=guest) is True
    assert vm.calls == ["stop", "ssh-poweroff"] and vm.vm is VMState.STOPPED


def test_a_guest_ssh_cannot_reach_stops_as_before_with_the_whole_timeout(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, agent = _pair(VMState.RUNNING)
    vm.ignores_button = True
    _runs_on(monkeypatch, vm)
    guest = FakeGuest(vm, "unreachable")
    assert stop_module.stop(NAME, RecordingProgress(), timeout=30, agent=agent, guest=guest)
    assert vm.calls == ["stop", "ssh-poweroff", "shutdown", "forced"]
    assert vm.shutdown_timeouts == [30]


def test_a_guest_that_accepts_but_stays_up_gets_the_button_within_the_timeout(
    dev: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm, agent = _pair(VMState.RUNNING)
    _runs_on(monkeypatch, vm)
    guest = FakeGuest(vm, "hangs")
    began = time.monotonic()
    assert stop_module.stop(NAME, RecordingProgress(), timeout=1.0, agent=agent, guest=guest)
    waited = time.monotonic() - began
    assert vm.calls == ["stop", "ssh-poweroff", "shutdown"] and vm.vm is VMState.STOPPED
    # Half the timeout for the guest's own poweroff, the rest for the button.
    assert 0.5 <= waited < 1.0
    assert vm.shutdown_timeouts[0] <= 0.5


def test_a_paused_guest_is_not_asked_over_ssh(dev: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm, agent = _pair(VMState.PAUSED)
    _runs_on(monkeypatch, vm)
    guest = FakeGuest(vm, "obeys")
    assert stop_module.stop(NAME, RecordingProgress(), agent=agent, guest=guest) is True
    assert vm.calls == ["stop", "shutdown"]  # the backend resumes it and presses the button


def _ssh_instance(root: Path, port: int) -> InstanceFiles:
    """The files SSHGuestPower reads: state.json (the port), the client key, the host key."""
    files = InstanceFiles(root)
    root.mkdir(parents=True, exist_ok=True)
    save_state(files.state, InstanceState(port, "x86_64-0", Accel.TCG))
    (root / "ssh").mkdir(exist_ok=True)
    write_keypair(files.client_key, generate_keypair("test"))
    write_keypair(files.host_key, host_keypair())
    return files


def _recording_shell(tmp: Path) -> tuple[str, Path]:
    """A guest shell that runs nothing: it writes down the command it was given."""
    (tmp / "guest").mkdir()
    log = tmp / "commands"
    shell = tmp / "shell"
    shell.write_text(f'#!/bin/sh\nprintf "%s\\n" "$2" >> {log}\n')
    shell.chmod(0o755)
    return str(shell), log


def test_ssh_poweroff_runs_busybox_inits_poweroff_with_the_pinned_key(tmp_path: Path) -> None:
    shell, log = _recording_shell(tmp_path)
    with running_guest(tmp_path / "guest", shell) as g:
        files = _ssh_instance(tmp_path / "inst", g.server.port)
        assert SSHGuestPower().poweroff(files) is True
    # The request left for the guest's ::shutdown script, then busybox init's poweroff.
    assert log.read_text() == ": > /run/pyd/poweroff; /usr/bin/busybox poweroff\n"


def test_ssh_poweroff_refuses_a_guest_with_another_host_key(tmp_path: Path) -> None:
    shell, log = _recording_shell(tmp_path)
    with running_guest(tmp_path / "guest", shell) as g:
        files = _ssh_instance(tmp_path / "inst", g.server.port)
        write_keypair(files.host_key, generate_keypair("not the guest's"))
        assert SSHGuestPower().poweroff(files) is False
    assert not log.exists()


def test_ssh_poweroff_fails_fast_without_a_guest_or_its_files(tmp_path: Path) -> None:
    assert SSHGuestPower().poweroff(InstanceFiles(tmp_path / "none")) is False  # no state
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        files = _ssh_instance(tmp_path / "inst", bound.getsockname()[1])
        began = time.monotonic()
        assert SSHGuestPower().poweroff(files) is False
        assert time.monotonic() - began < 3
    files.host_key.with_name("host_ed25519.pub").unlink()
    assert SSHGuestPower().poweroff(files) is False


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


def test_delete_removes_the_instances_use_record(
    dev: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    cache_root = tmp_path / "cache" / "images"
    other = instance("other").files
    other.root.mkdir(parents=True)
    (other.root / "config.toml").write_text('backend = "qemu"\n')
    for files in (instance(NAME).files, other):
        record_use(cache_root, "x86_64-" + "1" * 16, files.os_disk, files.state, files.arch)
    vm, agent = _pair(VMState.STOPPED)
    _runs_on(monkeypatch, vm)
    stop_module.delete(NAME, RecordingProgress(), agent=agent)
    uses, stale = recorded_uses(cache_root, tmp_path / "elsewhere")
    assert [u.instance for u in uses] == [str(other.root.resolve())] and not stale
    stop_module.delete("other", RecordingProgress(), agent=agent)
    assert not (cache_root / USERS_DIR).exists()  # the cache keeps nothing of them
