"""`pyd suspend` and the resume at `pyd start` (lifecycle.suspend, instance.saved_state)
through a fake VM backend that can save and restore, and a fake host agent: the record and
its comparison (pure), what a changed setting, a corrupt save or a rebooted disk do, the
status word, and the CLI's messages. Real disks (qemu-img), no VM."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyd.cli import main as cli_main
from pyd.config.store import edit_config
from pyd.errors import PydError, UsageError
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import instance
from pyd.instance.saved_state import (
    RestoreMark,
    SavedState,
    Shape,
    differences,
    disks_changed,
    load_saved,
    parse_saved,
    read_mark,
    remove_saved,
    stamp,
    to_text,
    write_mark,
)
from pyd.lifecycle import start as start_module
from pyd.lifecycle import stop as stop_module
from pyd.lifecycle import suspend as suspend_module
from pyd.lifecycle.progress import Progress
from pyd.lifecycle.run_state import RunState
from pyd.lifecycle.status import overall, status_hint
from pyd.vm.backends.base import SuspendableBackend, VMBackend, VMState
from pyd.vm.spec import GuestSpec
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress
from tests.unit.test_lifecycle_start import (
    SETTINGS,
    backend,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

NAME = "dev"
SAVED = b"the guest's memory"
SHAPE = Shape("x86_64-" + "0" * 16, 2, 2048, "x86_64", "libvirt", "8.2.2")


# -- the record, pure ------------------------------------------------------------------------


def test_the_same_shape_has_no_differences() -> None:
    assert differences(SHAPE, SHAPE) == []


def test_each_changed_setting_is_named_with_both_values() -> None:
    now = dataclasses.replace(SHAPE, memory_mib=4096, cpus=4, emulator="9.0.0")
    assert differences(SHAPE, now) == [
        "CPUs 2 -> 4",
        "memory 2 GiB -> 4 GiB",
        "QEMU version 8.2.2 -> 9.0.0",
    ]
    odd = dataclasses.replace(SHAPE, memory_mib=1536, image_key="x86_64-" + "1" * 16)
    assert differences(SHAPE, odd) == [
        f"image {SHAPE.image_key} -> {odd.image_key}",
        "memory 2 GiB -> 1536 MiB",
    ]


def test_the_record_reads_back_as_written_and_a_damaged_one_is_a_pyd_error(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "data.qcow2"
    disk.write_bytes(b"data")
    saved = SavedState(SHAPE, "2026-12-04T03:00:00+00:00", {"data.qcow2": stamp(disk)})
    assert parse_saved(to_text(saved), "x") == saved
    ready = dataclasses.replace(saved, engine_ready=True)
    assert parse_saved(to_text(ready), "x") == ready
    # A record from before engine_ready: the engine is waited for, as then.
    older = json.loads(to_text(ready))
    del older["engine_ready"]
    assert parse_saved(json.dumps(older), "x") == saved
    with pytest.raises(PydError, match="suspend record x is corrupted"):
        parse_saved('{"shape": {"cpus": 2}}', "x")
    assert load_saved(tmp_path / "missing.json") is None


def test_a_disk_written_or_replaced_after_the_save_is_seen(tmp_path: Path) -> None:
    for name in ("os.qcow2", "data.qcow2"):
        (tmp_path / name).write_bytes(b"as saved")
    saved = SavedState(SHAPE, "t", {n: stamp(tmp_path / n) for n in ("os.qcow2", "data.qcow2")})
    assert disks_changed(saved, tmp_path) == []
    st = (tmp_path / "data.qcow2").stat()
    os.utime(tmp_path / "data.qcow2", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    (tmp_path / "os.qcow2").unlink()
    assert disks_changed(saved, tmp_path) == ["os.qcow2", "data.qcow2"]


def test_the_save_files_live_in_the_instance_directory(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    assert files.suspend_save == tmp_path / "suspend.save"
    assert files.suspend_record == tmp_path / "suspend.json"
    assert files.suspend_failed == tmp_path / "suspend.save.failed"


def test_a_stopped_vm_with_a_save_is_suspended_and_start_resumes_it() -> None:
    assert overall(VMState.STOPPED, False, None, saved=True) is RunState.SUSPENDED
    assert overall(VMState.STOPPED, False, None, saved=False) is RunState.STOPPED
    assert overall(VMState.RUNNING, False, None, saved=True) is RunState.DEGRADED  # it runs
    assert "`pyd start -n dev` resumes it" in status_hint(RunState.SUSPENDED, None, " -n dev")


# -- suspend and resume through a fake backend -----------------------------------------------


class SavingBackend(FakeBackend):
    """A FakeBackend that saves to a file and restores from it, as libvirt does."""

    def __init__(self, state: VMState) -> None:
        super().__init__(state)
        self.emulator = "8.2.2"
        self.save_fails: PydError | None = None

    def emulator_version(self) -> str:
        return self.emulator

    def shape(self) -> tuple[int, int]:
        spec: GuestSpec = self.specs[-1]
        return spec.cpus, spec.memory_mib

    def save(self, path: Path) -> None:
        self.calls.append("save")
        if self.save_fails is not None:
            raise self.save_fails
        path.write_bytes(SAVED)
        self.vm = VMState.STOPPED

    def restore(self, path: Path) -> None:
        self.calls.append("restore")
        if path.read_bytes() != SAVED:
            raise PydError("libvirt: not a save image")
        self.vm = VMState.RUNNING


@pytest.fixture
def vm(
    backend: FakeBackend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> SavingBackend:
    """A started instance "dev" on a SavingBackend."""
    saving = SavingBackend(VMState.ABSENT)
    for module in (start_module, suspend_module):
        monkeypatch.setattr(module, "backend_for_config", lambda name, cfg: saving)
    _start(FakeAgent())
    saving.calls.clear()
    return saving


def _start(
    agent: FakeAgent, settings: dict[str, str] | None = None, restart: bool = False
) -> start_module.StartResult:
    return start_module.start(
        NAME, settings or SETTINGS, False, RecordingProgress(), agent=agent, restart=restart
    )


def _files() -> InstanceFiles:
    return instance(NAME).files


def _data_disk_id() -> tuple[int, bytes]:
    data = _files().data_disk
    return data.stat().st_ino, data.read_bytes()


def test_suspend_saves_the_vm_and_start_resumes_it_without_a_boot(vm: SavingBackend) -> None:
    agent = FakeAgent(running=True)
    result = suspend_module.suspend(NAME, RecordingProgress(), agent=agent)
    files = _files()
    assert not result.already and result.save_bytes == len(SAVED)
    assert agent.calls == ["stop"] and vm.calls == ["save"] and vm.vm is VMState.STOPPED
    record = load_saved(files.suspend_record)
    assert record is not None and record.shape.memory_mib == 512 and record.shape.cpus == 2
    assert record.engine_ready  # the agent was ready: the resumed one need not wait for it
    assert (files.suspend_record.stat().st_mode & 0o777) == 0o600
    # Once more: nothing to do, nothing lost.
    again = suspend_module.suspend(NAME, RecordingProgress(), agent=agent)
    assert again.already and files.suspend_save.read_bytes() == SAVED
    vm.calls.clear()
    resumed = _start(agent)
    assert vm.calls == ["restore"]  # no boot: the saved VM runs on
    assert agent.calls[-1] == "launch" and resumed.docker_host == agent.docker_host
    assert not files.suspend_save.exists() and not files.suspend_record.exists()


def test_a_changed_setting_refuses_to_resume_and_keeps_the_save(vm: SavingBackend) -> None:
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    vm.calls.clear()
    with pytest.raises(UsageError, match="memory 512 MiB -> 1 GiB") as info:
        _start(FakeAgent(), {**SETTINGS, "memory": "1GiB"})
    assert "pyd start --restart -n dev" in info.value.hint
    assert vm.calls == [] and _files().suspend_save.read_bytes() == SAVED
    vm.emulator = "9.0.0"  # QEMU upgraded meanwhile
    with pytest.raises(UsageError, match=r"QEMU version 8\.2\.2 -> 9\.0\.0"):
        _start(FakeAgent(), {**SETTINGS, "memory": "1GiB"})
    assert vm.calls == [] and _files().suspend_record.exists()


def test_restart_resumes_shuts_down_cleanly_then_boots_the_new_settings(
    vm: SavingBackend,
) -> None:
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    vm.calls.clear()
    _start(FakeAgent(), {**SETTINGS, "memory": "1GiB"}, restart=True)
    assert vm.calls == ["restore", "shutdown", "start"]
    assert vm.specs[-1].memory_mib == 1024
    assert not _files().suspend_save.exists() and not _files().suspend_failed.exists()


def test_a_corrupt_save_is_set_aside_and_the_vm_boots_afresh(vm: SavingBackend) -> None:
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    files = _files()
    files.suspend_save.write_bytes(b"truncat")
    before = _data_disk_id()
    progress = RecordingProgress()
    vm.calls.clear()
    start_module.start(NAME, SETTINGS, False, progress, agent=FakeAgent())
    assert vm.calls == ["restore", "start"]
    assert files.suspend_failed.read_bytes() == b"truncat" and not files.suspend_save.exists()
    assert any("not a save image" in s and "suspend.save.failed" in s for s in progress.said)
    assert _data_disk_id() == before


def test_a_save_whose_disk_another_boot_wrote_is_never_restored(vm: SavingBackend) -> None:
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    files = _files()
    st = files.data_disk.stat()  # what `pyd upgrade` or a `virsh start` would have done
    os.utime(files.data_disk, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    progress = RecordingProgress()
    vm.calls.clear()
    start_module.start(NAME, SETTINGS, False, progress, agent=FakeAgent())
    assert vm.calls == ["start"]  # not restored
    assert files.suspend_failed.read_bytes() == SAVED
    assert any("data.qcow2 changed since the suspend" in s for s in progress.said)


def test_a_failed_save_gives_the_running_vm_its_agent_back(vm: SavingBackend) -> None:
    vm.save_fails = PydError("libvirt: no space left on device")
    agent = FakeAgent(running=True)
    with pytest.raises(PydError, match="no space"):
        suspend_module.suspend(NAME, RecordingProgress(), agent=agent)
    assert agent.calls == ["stop", "launch"] and agent.running
    assert not _files().suspend_record.exists() and vm.vm is VMState.RUNNING


def test_new_keys_on_a_suspended_instance_need_a_restart(vm: SavingBackend) -> None:
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    with pytest.raises(UsageError, match="new SSH keys"):
        start_module.start(
            NAME, SETTINGS, False, RecordingProgress(), agent=FakeAgent(), new_keys=True
        )
    assert _files().suspend_save.read_bytes() == SAVED


def test_delete_removes_the_save_and_its_record(
    vm: SavingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    files = _files()
    files.suspend_failed.write_bytes(b"an older one")

    def runs_on(name: str) -> tuple[list[VMBackend], str]:
        return [vm], ""

    monkeypatch.setattr(stop_module, "backends_to_stop", runs_on)
    stop_module.delete(NAME, RecordingProgress(), agent=FakeAgent())
    assert not files.root.exists()


def test_only_a_backend_that_can_save_is_suspendable() -> None:
    assert isinstance(SavingBackend(VMState.RUNNING), SuspendableBackend)
    assert not isinstance(FakeBackend(VMState.RUNNING), SuspendableBackend)


# -- the CLI -----------------------------------------------------------------------------------


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as code:
        cli_main.main(args)
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err
    return int(code.value.code or 0), err


def test_suspend_on_a_backend_that_cannot_says_so_and_changes_nothing(
    backend: FakeBackend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _start(FakeAgent())
    monkeypatch.setattr(suspend_module, "backend_for_config", lambda name, cfg: backend)
    stopped: list[str] = []
    monkeypatch.setattr("pyd.lifecycle.agent_proc.stop_agent", lambda *a, **k: stopped.append("x"))
    code, err = _cli(["suspend", "-n", NAME], capsys)
    assert code == 2 and "not supported yet for the fake backend" in err
    assert "nothing was changed" in err and "pyd stop -n dev" in err
    assert backend.vm is VMState.RUNNING and not _files().suspend_save.exists()
    assert stopped == []


def test_suspend_of_a_stopped_instance_and_of_a_missing_one_are_usage_errors(
    vm: SavingBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    vm.vm = VMState.STOPPED
    code, err = _cli(["suspend", "-n", NAME], capsys)
    assert code == 2 and "is not running: there is nothing to suspend" in err
    code, err = _cli(["suspend", "-n", "nosuch"], capsys)
    assert code == 2 and "nosuch" in err


def test_cli_suspend_then_a_changed_start_prints_what_changed_and_the_flag(
    vm: SavingBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(suspend_module, "suspend", _with_fake_agent(suspend_module.suspend))
    code, err = _cli(["suspend", "-n", NAME], capsys)
    assert code == 0 and "'dev' is suspended" in err and "pyd start -n dev` resumes it" in err
    code, err = _cli(["start", "-n", NAME, "--memory", "1GiB", "--no-context"], capsys)
    assert code == 2 and "memory 512 MiB -> 1 GiB" in err and "--restart" in err


def test_stop_of_a_suspended_instance_keeps_the_save_and_says_how_to_power_it_off(
    vm: SavingBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(suspend_module, "suspend", _with_fake_agent(suspend_module.suspend))
    assert _cli(["suspend", "-n", NAME], capsys)[0] == 0
    code, err = _cli(["stop", "-n", NAME], capsys)  # no agent runs: the real one finds none
    assert code == 0 and "'dev' is suspended (its memory is saved)" in err, err
    assert "`pyd start -n dev` resumes it, then `pyd stop -n dev --shutdown` powers it off" in err
    assert _files().suspend_save.exists() and _files().suspend_record.exists()


def _stop_by_suspending() -> None:
    edit_config(_files().config, lambda cfg: dataclasses.replace(cfg, stop="suspend"))


def test_where_the_config_says_stop_suspend_a_stop_suspends(vm: SavingBackend) -> None:
    _stop_by_suspending()
    progress = RecordingProgress()
    saved = suspend_module.suspend_instead_of_stop(NAME, progress, FakeAgent(running=True))
    assert saved is not None and not saved.already and vm.calls == ["save"]
    assert _files().suspend_save.read_bytes() == SAVED and progress.said == []
    # Suspended already: nothing to save; the plain stop then tells the user.
    assert suspend_module.suspend_instead_of_stop(NAME, progress, FakeAgent()) is None


def test_a_stop_with_the_default_setting_or_a_backend_that_cannot_suspend_powers_off(
    vm: SavingBackend,
    backend: FakeBackend,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    progress = RecordingProgress()
    assert suspend_module.suspend_instead_of_stop(NAME, progress, FakeAgent()) is None
    assert vm.calls == [] and progress.said == []  # stop = "shutdown": not even asked
    _stop_by_suspending()
    backend.vm = VMState.RUNNING
    monkeypatch.setattr(suspend_module, "backend_for_config", lambda name, cfg: backend)
    assert suspend_module.suspend_instead_of_stop(NAME, progress, FakeAgent()) is None
    assert progress.said == ["the fake backend cannot suspend yet: powering off instead"]
    assert not _files().suspend_save.exists()


def test_pyd_stop_suspends_where_configured_and_shutdown_always_powers_off(
    vm: SavingBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stop_by_suspending()
    real = suspend_module.suspend_instead_of_stop
    monkeypatch.setattr(
        suspend_module,
        "suspend_instead_of_stop",
        lambda name, progress: real(name, progress, FakeAgent(running=True)),
    )
    code, err = _cli(["stop", "-n", NAME], capsys)
    assert code == 0 and "'dev' is suspended (" in err, err
    assert "saved)" in err and "`pyd start -n dev` resumes it" in err
    assert vm.calls == ["save"]
    monkeypatch.setattr(stop_module, "backends_to_stop", lambda name: ([vm], ""))
    vm.calls.clear()
    vm.vm = VMState.RUNNING  # as if resumed: --shutdown must power it off, not save it
    code, err = _cli(["stop", "-n", NAME, "--shutdown"], capsys)
    assert code == 0 and "'dev' stopped" in err, err
    assert "save" not in vm.calls and vm.vm is VMState.STOPPED


def _with_fake_agent(
    suspend: Callable[..., suspend_module.SuspendResult],
) -> Callable[[str, Progress], suspend_module.SuspendResult]:
    def run(name: str, progress: Progress) -> suspend_module.SuspendResult:
        return suspend(name, progress, agent=FakeAgent(running=True))

    return run


def test_the_agent_hears_the_restore_is_over_before_the_save_is_deleted(
    vm: SavingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleting a 2 GiB guest's save takes ~0.07 s: not while the agent waits to connect."""
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    files = _files()
    seen: list[RestoreMark | None] = []

    def remove(save: Path, record: Path) -> None:
        seen.append(read_mark(files.restoring, time.time()))
        remove_saved(save, record)

    monkeypatch.setattr(suspend_module, "remove_saved", remove)
    write_mark(files.restoring, RestoreMark(done=False))  # as agent_proc.launch_around does
    _start(FakeAgent())
    # Over, and with what the agent may skip: its engine answered at the save.
    assert seen == [RestoreMark(done=True, engine_ready=True)]
    assert not files.suspend_save.exists()


def test_a_restore_to_apply_new_settings_leaves_no_mark_for_the_boot_after(
    vm: SavingBackend,
) -> None:
    """--restart resumes without an agent, powers off and boots: that agent must see a boot."""
    suspend_module.suspend(NAME, RecordingProgress(), agent=FakeAgent(running=True))
    _start(FakeAgent(), {**SETTINGS, "cpus": "3"}, restart=True)
    assert read_mark(_files().restoring, time.time()) is None
