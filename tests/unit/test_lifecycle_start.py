"""`pyd start` (lifecycle.start) through a fake VM backend and a fake host agent: what it
makes for a new instance, what it leaves alone for a running one, and what a failed start
keeps. The disks are real (qemu-img), the image a tiny stand-in; no VM, no agent process."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pyd.config.arches import Arch
from pyd.config.machine import Accel
from pyd.errors import ImageError, PydError, UsageError
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.manifest import FileEntry, Manifest
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import instance
from pyd.instance.state import instance_arch, load_state
from pyd.lifecycle import start as start_module
from pyd.vm import accel as accel_module
from pyd.vm.accel import ENABLE_WHPX, AccelChoice, HostFacts
from pyd.vm.backends.base import VMState
from pyd.vm.spec import GuestSpec
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

NAME = "dev"
SETTINGS = {"memory": "512MiB", "disk": "1GiB", "accel": "tcg"}  # fits any test machine


def _image(cache: ImageCache, arch: Arch) -> CachedImage:
    """A cache entry with the files a boot names: an OS disk base, a kernel, an initrd."""
    key = image_key(arch.name, "0" * 64)
    found = cache.get(key)
    if found is not None:
        return found
    with cache.staging() as staging:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(staging / "rootfs.qcow2"), "64M"],
            check=True,
        )
        (staging / "vmlinuz").write_bytes(b"kernel")
        (staging / "initrd.img").write_bytes(b"initrd")
        files = {p.name: FileEntry(p.stat().st_size, "0" * 64) for p in sorted(staging.iterdir())}
        manifest = Manifest("0", arch.name, "unit", "0" * 64, {}, files)
        return cache.commit(staging, key, manifest)


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    """A private PYD_HOME, image cache and docker config; the VM is `backend`, the image
    is built (by the stand-in) on first use."""
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    vm = FakeBackend(VMState.ABSENT)
    monkeypatch.setattr(start_module, "backend_for_config", lambda name, cfg: vm)

    def build(
        cache: ImageCache, arch: Arch, suite: str, recipe: Path, progress: Callable[[str], None]
    ) -> tuple[CachedImage, bool]:
        return _image(cache, arch), True

    monkeypatch.setattr(start_module, "build_image", build)
    monkeypatch.setattr("pyd.image.obtain.can_build_here", lambda: (True, ""))  # any host
    return vm


def _start(agent: FakeAgent, use_context: bool = True) -> start_module.StartResult:
    return start_module.start(NAME, SETTINGS, use_context, RecordingProgress(), agent=agent)


def _current_context(tmp_path: Path) -> str:
    return str(json.loads((tmp_path / "docker" / "config.json").read_text())["currentContext"])


def test_a_new_instance_gets_disks_a_seed_a_vm_an_agent_and_a_context(
    backend: FakeBackend, tmp_path: Path
) -> None:
    agent = FakeAgent()
    result = _start(agent)
    files = instance(NAME).files
    for made in (files.os_disk, files.data_disk, files.seed_iso, files.config, files.client_key):
        assert made.exists(), made
    assert backend.calls == ["start"]
    (spec,) = backend.specs
    assert spec.memory_mib == 512 and spec.accel is Accel.TCG
    assert [d.path for d in spec.disks] == [files.os_disk, files.data_disk, files.seed_iso]
    state = load_state(files.state)
    assert state is not None and state.ssh_port == spec.ssh_port and state.accel is Accel.TCG
    assert agent.calls == ["stop", "launch"]  # a stale agent goes first
    assert result == start_module.StartResult(NAME, agent.docker_host, "pyd-dev", False)
    assert _current_context(tmp_path) == "pyd-dev"


def test_without_context_no_docker_context_is_made(backend: FakeBackend, tmp_path: Path) -> None:
    assert _start(FakeAgent(), use_context=False).context is None
    assert not (tmp_path / "docker").exists()


def test_a_running_instance_with_a_ready_agent_is_left_as_it_is(backend: FakeBackend) -> None:
    _start(FakeAgent())
    backend.calls.clear()
    agent = FakeAgent(running=True)
    result = _start(agent)
    assert result.already_running and result.docker_host == agent.docker_host
    assert backend.calls == [] and agent.calls == []  # no boot, no agent stopped or launched


def test_a_running_vm_without_an_agent_gets_one_and_is_not_booted_again(
    backend: FakeBackend,
) -> None:
    _start(FakeAgent())
    backend.calls.clear()
    agent = FakeAgent(running=False)
    result = _start(agent)
    assert not result.already_running
    assert backend.calls == [] and agent.calls == ["stop", "launch"]


@pytest.mark.parametrize("fails", ["vm", "agent"])
def test_a_failed_start_keeps_the_instance_and_its_data_disk(
    backend: FakeBackend, fails: str
) -> None:
    agent = FakeAgent()
    if fails == "vm":
        backend.start_fails = PydError("QEMU failed to start")
    else:
        agent.fails = PydError("the Docker engine did not answer")
    with pytest.raises(PydError):
        _start(agent)
    inst = instance(NAME)
    assert inst.exists and inst.files.config.exists() and inst.files.state.exists()
    data = inst.files.data_disk
    disk_id = (data.stat().st_ino, data.read_bytes())
    # The next start uses what the failed one made: the same data disk, not a new one.
    backend.start_fails = agent.fails = None
    backend.vm = VMState.STOPPED if fails == "vm" else backend.vm
    _start(agent)
    assert (data.stat().st_ino, data.read_bytes()) == disk_id


class PortThief(FakeBackend):
    """A backend whose first `steal` starts find their SSH port taken by another program
    just before QEMU listens, as a concurrent start of another instance may take it."""

    def __init__(self, steal: int) -> None:
        super().__init__(VMState.ABSENT)
        self.steal = steal
        self.held: list[socket.socket] = []

    def start(self, spec: GuestSpec) -> None:
        if len(self.held) < self.steal:
            s = socket.socket()
            s.bind(("127.0.0.1", spec.ssh_port))
            s.listen()
            self.held.append(s)
            self.specs.append(spec)
            raise PydError(f"Could not set up host forwarding rule 'tcp:127.0.0.1:{spec.ssh_port}'")
        super().start(spec)


@pytest.mark.parametrize("steal", [1, start_module.PORT_TRIES])
def test_an_ssh_port_taken_before_qemu_listens_is_chosen_again(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch, steal: int
) -> None:
    thief = PortThief(steal)  # in place of `backend`, in its private PYD_HOME
    monkeypatch.setattr(start_module, "backend_for_config", lambda name, cfg: thief)
    try:
        if steal == start_module.PORT_TRIES:  # taken every time: the error, not a loop
            with pytest.raises(PydError, match="host forwarding rule"):
                _start(FakeAgent())
            return
        _start(FakeAgent())
        taken = thief.held[0].getsockname()[1]
        state = load_state(instance(NAME).files.state)
        assert state is not None and state.ssh_port != taken
        assert [spec.ssh_port for spec in thief.specs] == [taken, state.ssh_port]
    finally:
        for s in thief.held:
            s.close()


def test_a_start_failing_for_another_reason_is_not_tried_again(backend: FakeBackend) -> None:
    backend.start_fails = PydError("QEMU failed to start")
    with pytest.raises(PydError, match="QEMU failed"):
        _start(FakeAgent())
    assert len(backend.specs) == 1


# -- the guest architecture kept before the boot, and the accelerator's memory limit ----------


def _start_arch(arch: str | None, settings: dict[str, str] | None = None) -> None:
    start_module.start(
        NAME, settings or SETTINGS, False, RecordingProgress(), agent=FakeAgent(), arch=arch
    )


def test_a_first_start_that_fails_before_the_boot_keeps_the_arch_it_was_asked(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    with pytest.raises(ImageError, match="no aarch64 image"):  # none in the cache
        _start_arch("aarch64")
    files = instance(NAME).files
    assert not files.state.exists() and not files.os_disk.exists()
    assert instance_arch(files) == "aarch64"
    # The next start without --arch is still an aarch64 one: it asks for the same image.
    with pytest.raises(ImageError, match="no aarch64 image") as info:
        _start_arch(None)
    assert "--arch aarch64" in info.value.hint
    assert backend.calls == []
    # Nothing of it booted yet: it may still become an x86_64 guest.
    _start_arch("x86_64")
    state = load_state(files.state)
    assert state is not None and state.arch == "x86_64" and backend.specs[0].arch.name == "x86_64"
    with pytest.raises(UsageError, match="is an x86_64 guest"):
        _start_arch("aarch64")


def test_a_bad_setting_on_a_first_start_with_arch_leaves_no_instance(
    backend: FakeBackend,
) -> None:
    with pytest.raises(UsageError):
        _start_arch("aarch64", {**SETTINGS, "cpus": "zero"})
    assert not instance(NAME).files.root.exists()


def test_hvf_memory_limit_is_checked_before_any_image_disk_or_seed(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An Apple Silicon Mac with plenty of memory. A check made at the VM's spec (as before)
    # would come after the image (built here by the stand-in) and the disks.
    monkeypatch.setattr("platform.machine", lambda: "arm64")
    monkeypatch.setattr(start_module, "resolve_accel", lambda accel, arch: AccelChoice(Accel.HVF))
    monkeypatch.setattr(start_module, "host_memory_mib", lambda: 128 * 1024)
    with pytest.raises(UsageError, match="hvf maps at most 64512 MiB") as info:
        _start_arch(None, {**SETTINGS, "memory": "64GiB"})
    assert "pyd config set memory 64512MiB" in info.value.hint
    files = instance(NAME).files
    for absent in (files.os_disk, files.data_disk, files.seed_iso, files.state):
        assert not absent.exists(), absent
    assert backend.calls == []
    assert instance_arch(files) == "aarch64"  # kept: the instance exists (its config)


def test_a_damaged_arch_file_reads_as_an_unknown_arch_not_a_traceback(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path)
    files.arch.write_bytes(b"\xff\xfe\n")
    arch = instance_arch(files)
    assert arch is not None and arch not in ("x86_64", "aarch64")


def test_auto_falling_back_to_tcg_is_said_with_its_fix(
    backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Windows host without the Windows Hypervisor Platform, as the probe would see it.
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(accel_module, "host_system", lambda: "win32")
    monkeypatch.setattr(accel_module, "host_facts", lambda system: HostFacts())
    progress = RecordingProgress()
    start_module.start(NAME, {**SETTINGS, "accel": "auto"}, False, progress, agent=FakeAgent())
    assert backend.specs[-1].accel == Accel.TCG
    (said,) = [line for line in progress.said if "whpx is unavailable" in line]
    assert "software emulation" in said and f"to fix: {ENABLE_WHPX}" in said
