"""`pyd upgrade` (lifecycle.upgrade) through a fake VM backend and a fake host agent: the OS
disk swapped and the data disk kept, nothing done when already newest, a failed boot rolled
back, a stopped instance left stopped, an upgrade cut short finished by the next command,
and `pyd status` telling of a newer image. Real qcow2 files (qemu-img), tiny stand-in
images; no VM."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from pyd.cli.main import main
from pyd.config.arches import get_arch
from pyd.config.store import load_config
from pyd.errors import ImageError, PydError
from pyd.host.paths import images_dir
from pyd.image.cache import CachedImage, ImageCache, image_key
from pyd.image.index import IndexEntry
from pyd.image.manifest import FileEntry, Manifest
from pyd.image.prune import USERS_DIR, instance_use, recorded_uses
from pyd.instance.files import InstanceFiles
from pyd.instance.registry import instance
from pyd.instance.state import load_state
from pyd.lifecycle import start as start_module
from pyd.lifecycle import status as status_module
from pyd.lifecycle import upgrade as upgrade_module
from pyd.lifecycle.agent_proc import Meanwhile
from pyd.lifecycle.progress import Progress
from pyd.lifecycle.upgrade import UpgradeResult, UpgradeRolledBack
from pyd.lifecycle.upgrade_marker import MARKER, kept_disk, read_marker
from pyd.vm.backends.base import VMState
from pyd.vm.spec import GuestSpec
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")

NAME = "dev"
SETTINGS = {"memory": "512MiB", "disk": "1GiB", "accel": "tcg"}
OLD = image_key("x86_64", "1" * 64)
NEW = image_key("x86_64", "2" * 64)


def _add_image(digit: str, created: str) -> CachedImage:
    cache = ImageCache(images_dir())
    with cache.staging() as staging:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(staging / "rootfs.qcow2"), "64M"],
            check=True,
        )
        (staging / "vmlinuz").write_bytes(b"kernel " + digit.encode())
        (staging / "initrd.img").write_bytes(b"initrd")
        files = {p.name: FileEntry(p.stat().st_size, "0" * 64) for p in sorted(staging.iterdir())}
        manifest = Manifest("0", "x86_64", "unit", digit * 64, {}, files, created=created)
        return cache.commit(staging, image_key("x86_64", digit * 64), manifest)


class PickyBackend(FakeBackend):
    """A fake VM that will not boot the kernel of the images named in `refuses`."""

    def __init__(self) -> None:
        super().__init__(VMState.ABSENT)
        self.refuses: set[str] = set()

    def start(self, spec: GuestSpec) -> None:
        self.start_fails = (
            PydError("QEMU: could not load kernel")
            if spec.kernel.parent.name in self.refuses
            else None
        )
        super().start(spec)


class PickyAgent(FakeAgent):
    """An agent whose engine check fails `fails_left` times (then launch succeeds)."""

    def __init__(self) -> None:
        super().__init__()
        self.fails_left = 0
        self.interrupt = False  # launch is cut as by a kill -9 of pyd

    def launch(
        self, files: InstanceFiles, name: str, progress: Progress, meanwhile: Meanwhile = None
    ) -> str:
        if self.interrupt:
            self.interrupt = False
            raise KeyboardInterrupt
        self.fails = PydError("the Docker engine did not answer") if self.fails_left else None
        self.fails_left = max(0, self.fails_left - 1)
        return super().launch(files, name, progress, meanwhile)


@pytest.fixture
def vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PickyBackend:
    """A private PYD_HOME and cache holding image OLD; instance NAME started on it."""
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    backend = PickyBackend()
    for module in (start_module, upgrade_module):
        monkeypatch.setattr(module, "backend_for_config", lambda name, cfg: backend)
    # A new instance takes the cache's newest (no build in unit tests).
    monkeypatch.setattr(
        start_module,
        "build_image",
        lambda cache, arch, suite, recipe, progress: (cache.find(arch.name), False),
    )
    # The recipe's image (what obtain_for_config builds or downloads) is the first one.
    recipe_image = _add_image("1", "2026-01-01T00:00:00Z")
    monkeypatch.setattr(upgrade_module, "obtain_for_config", lambda *a, **k: recipe_image)
    start_module.start(NAME, SETTINGS, False, RecordingProgress(), agent=FakeAgent())
    backend.calls.clear()
    return backend


class PoweredOff:
    """GuestPower: the guest takes `poweroff` over SSH and is down at once."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def poweroff(self, files: InstanceFiles) -> bool:
        self.backend.vm = VMState.STOPPED
        return True


def _upgrade(
    backend: FakeBackend, agent: FakeAgent, progress: RecordingProgress | None = None
) -> UpgradeResult:
    return upgrade_module.upgrade(
        NAME, progress or RecordingProgress(), agent=agent, guest=PoweredOff(backend)
    )


def _files() -> InstanceFiles:
    return instance(NAME).files


def _identity(path: Path) -> tuple[int, bytes]:
    return path.stat().st_ino, path.read_bytes()


def _backing(disk: Path) -> str:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(disk)], capture_output=True, check=True
    )
    return Path(json.loads(info.stdout)["backing-filename"]).parent.name


def _image_key() -> str:
    state = load_state(_files().state)
    assert state is not None
    return state.image_key


def test_upgrade_swaps_the_os_disk_and_state_and_keeps_the_data_disk(vm: PickyBackend) -> None:
    files = _files()
    data = _identity(files.data_disk)
    _add_image("2", "2026-02-01T00:00:00Z")
    agent = FakeAgent(running=True)
    progress = RecordingProgress()
    result = _upgrade(vm, agent, progress)
    assert result == UpgradeResult(NAME, OLD, NEW, running=True)
    assert _image_key() == NEW and _backing(files.os_disk) == NEW
    assert vm.specs[-1].kernel.parent.name == NEW and vm.vm is VMState.RUNNING
    assert _identity(files.data_disk) == data  # same inode, same bytes
    assert not kept_disk(files).exists() and not (files.root / MARKER).exists()
    assert agent.calls == ["stop", "stop", "launch"] and vm.calls == ["start"]
    assert progress.phases[:3] == ["newest image", "shutdown", "os-disk swap"]
    assert "old OS disk removed" in progress.phases


def test_already_newest_touches_nothing(vm: PickyBackend) -> None:
    files = _files()
    before = {p.name: p.stat().st_mtime_ns for p in files.root.iterdir()}
    agent = FakeAgent(running=True)
    result = _upgrade(vm, agent)
    assert not result.changed and result.new_image == OLD and result.running
    assert vm.calls == [] and agent.calls == []
    assert {p.name: p.stat().st_mtime_ns for p in files.root.iterdir()} == before


@pytest.mark.parametrize("fails", ["boot", "engine"])
def test_a_failed_new_image_is_rolled_back_and_started_again(vm: PickyBackend, fails: str) -> None:
    files = _files()
    os_disk, data = _identity(files.os_disk), _identity(files.data_disk)
    _add_image("2", "2026-02-01T00:00:00Z")
    agent = PickyAgent()
    agent.running = True
    if fails == "boot":
        vm.refuses.add(NEW)
    else:
        agent.fails_left = 1
    with pytest.raises(UpgradeRolledBack) as info:
        _upgrade(vm, agent)
    message = info.value.message
    assert "rolled back to " + OLD in message and "running again" in message
    assert ("could not load kernel" if fails == "boot" else "did not answer") in message
    assert _identity(files.os_disk) == os_disk  # the very file it had: renamed back
    assert _image_key() == OLD and _identity(files.data_disk) == data
    assert [s.kernel.parent.name for s in vm.specs[-2:]] == [NEW, OLD]
    assert vm.vm is VMState.RUNNING and agent.running
    assert not kept_disk(files).exists() and read_marker(files) is None


def _recorded(files: InstanceFiles) -> str | None:
    """The image the instance's use record in the cache names (image.prune)."""
    uses, _ = recorded_uses(images_dir(), files.root.parent.parent / "elsewhere")
    [use] = [u for u in uses if u.instance == str(files.root.resolve())]
    [key] = use.keys if not files.os_disk.exists() else {_backing(files.os_disk)}
    return key


def test_start_and_upgrade_record_the_image_in_the_cache(vm: PickyBackend) -> None:
    files = _files()
    record = json.loads(next((images_dir() / USERS_DIR).iterdir()).read_text())
    assert record["image"] == OLD and record["instance_dir"] == str(files.root.resolve())
    _add_image("2", "2026-02-01T00:00:00Z")
    _upgrade(vm, FakeAgent(running=True))
    [path] = (images_dir() / USERS_DIR).iterdir()
    assert json.loads(path.read_text())["image"] == NEW


class CheckingPower(PoweredOff):
    """Asserts, as the guest is asked to power off, that prune would keep the new image."""

    def poweroff(self, files: InstanceFiles) -> bool:
        use = instance_use(files.root, files.state, files.arch, images_dir())
        assert NEW in use.keys and OLD in use.keys
        return super().poweroff(files)


def test_the_new_image_is_named_before_the_shutdown(vm: PickyBackend) -> None:
    _add_image("2", "2026-02-01T00:00:00Z")
    guest = CheckingPower(vm)
    agent = FakeAgent(running=True)
    result = upgrade_module.upgrade(NAME, RecordingProgress(), agent=agent, guest=guest)
    assert result.changed and _image_key() == NEW


@pytest.mark.parametrize("fails", ["overlay", "shutdown"])
def test_a_failed_swap_or_shutdown_is_rolled_back_at_once(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    files = _files()
    os_disk = _identity(files.os_disk)
    _add_image("2", "2026-02-01T00:00:00Z")

    def broken_overlay(base: Path, dest: Path) -> None:
        dest.write_bytes(b"half a disk")
        raise PydError("qemu-img create failed: No space left on device")

    def broken_shutdown(timeout: float) -> None:
        raise PydError("libvirt: the domain did not stop")

    if fails == "overlay":
        monkeypatch.setattr(upgrade_module, "create_overlay", broken_overlay)
        guest: PoweredOff = PoweredOff(vm)
    else:
        monkeypatch.setattr(vm, "shutdown", broken_shutdown)
        guest = Refusing(vm)
    agent = FakeAgent(running=True)
    with pytest.raises(UpgradeRolledBack) as info:
        upgrade_module.upgrade(NAME, RecordingProgress(), agent=agent, guest=guest)
    message = info.value.message
    assert "rolled back to " + OLD + " (running again on it)" in message
    assert ("No space left" if fails == "overlay" else "did not stop") in message
    assert _identity(files.os_disk) == os_disk and _image_key() == OLD
    assert vm.specs[-1].kernel.parent.name == OLD  # NEW never booted
    assert vm.vm is VMState.RUNNING and agent.running
    assert not kept_disk(files).exists() and read_marker(files) is None


class Refusing(PoweredOff):
    """GuestPower: SSH cannot reach the guest (the backend's button is used)."""

    def poweroff(self, files: InstanceFiles) -> bool:
        return False


def test_a_stopped_instance_is_checked_and_stopped_again(vm: PickyBackend) -> None:
    vm.vm = VMState.STOPPED
    _add_image("2", "2026-02-01T00:00:00Z")
    progress = RecordingProgress()
    result = _upgrade(vm, FakeAgent(), progress)
    assert result.changed and not result.running
    assert vm.calls == ["start"] and vm.vm is VMState.STOPPED  # booted for the check only
    assert _image_key() == NEW
    assert any("stopped before" in s for s in progress.said)


def test_a_stopped_instance_whose_new_image_fails_stays_stopped(vm: PickyBackend) -> None:
    vm.vm = VMState.STOPPED
    _add_image("2", "2026-02-01T00:00:00Z")
    vm.refuses.add(NEW)
    with pytest.raises(UpgradeRolledBack, match="stopped, as before"):
        _upgrade(vm, FakeAgent())
    assert vm.calls == ["start"] and vm.vm is VMState.STOPPED and _image_key() == OLD


@pytest.mark.parametrize("then", ["start", "upgrade"])
def test_an_upgrade_cut_midway_is_rolled_back_by_the_next_command(
    vm: PickyBackend, then: str
) -> None:
    files = _files()
    os_disk, data = _identity(files.os_disk), _identity(files.data_disk)
    _add_image("2", "2026-02-01T00:00:00Z")
    agent = PickyAgent()
    agent.running = True
    agent.interrupt = True  # pyd dies while the new image boots
    with pytest.raises(KeyboardInterrupt):
        _upgrade(vm, agent)
    marker = read_marker(files)
    assert marker is not None and marker.new_image == NEW and kept_disk(files).exists()
    assert _image_key() == NEW and vm.vm is VMState.RUNNING  # left booting on the new disk
    progress = RecordingProgress()
    if then == "start":
        start_module.start(NAME, {}, False, progress, agent=agent)
        assert _image_key() == OLD and _identity(files.os_disk) == os_disk
        assert vm.specs[-1].kernel.parent.name == OLD
    else:
        result = _upgrade(vm, agent, progress)  # rolled back, then done again
        assert result.rolled_back_cut and result.running and _image_key() == NEW
    assert any("cut short; rolled back to " + OLD in s for s in progress.said)
    assert "kill" in vm.calls  # the VM on the new disk went down before the swap back
    assert vm.vm is VMState.RUNNING and _identity(files.data_disk) == data
    assert not kept_disk(files).exists() and read_marker(files) is None


def test_a_committed_marker_only_leaves_clean_up(vm: PickyBackend) -> None:
    files = _files()
    _add_image("2", "2026-02-01T00:00:00Z")
    _upgrade(vm, FakeAgent(running=True))
    kept_disk(files).write_bytes(b"old disk")  # as when pyd died during the clean-up
    (files.root / MARKER).write_text(
        json.dumps(
            {
                "old_state": {"ssh_port": 1, "image_key": OLD, "accel": "tcg"},
                "new_image": NEW,
                "was_running": True,
                "committed": True,
            }
        )
    )
    start_module.start(NAME, {}, False, RecordingProgress(), agent=FakeAgent(running=True))
    assert _image_key() == NEW and not kept_disk(files).exists()
    assert not (files.root / MARKER).exists()


def test_status_tells_of_a_newer_image(vm: PickyBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "backend_for_config", lambda name, cfg: vm)
    assert status_module.instance_status(instance(NAME)).newer_image == ""
    _add_image("0", "2025-01-01T00:00:00Z")  # older: not offered
    assert status_module.instance_status(instance(NAME)).newer_image == ""
    _add_image("2", "2026-02-01T00:00:00Z")
    st = status_module.instance_status(instance(NAME))
    assert st.newer_image == NEW and st.to_json()["newer_image"] == NEW
    _upgrade(vm, FakeAgent(running=True))
    assert status_module.instance_status(instance(NAME)).newer_image == ""


def _entry(digit: str, created: str) -> IndexEntry:
    return IndexEntry(
        "x86_64", digit * 64, created, "unit", "0", {}, 1, f"{digit}/manifest.json", 1, "0" * 64
    )


def test_status_tells_of_a_newer_image_in_the_index_last_pulled(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_module, "backend_for_config", lambda name, cfg: vm)
    entry: list[IndexEntry | None] = [None]
    monkeypatch.setattr(status_module, "cached_newest", lambda cache, arch, keys: entry[0])
    assert status_module.instance_status(instance(NAME)).newer_image == ""
    entry[0] = _entry("0", "2025-06-01T00:00:00+00:00")  # older than the instance's image
    assert status_module.instance_status(instance(NAME)).newer_image == ""
    entry[0] = _entry("3", "2026-03-01T00:00:00+00:00")  # not downloaded yet: still told
    assert status_module.instance_status(instance(NAME)).newer_image == image_key(
        "x86_64", "3" * 64
    )
    _add_image("4", "2026-04-01T00:00:00Z")  # a cached one newer still wins
    assert status_module.instance_status(instance(NAME)).newer_image == image_key(
        "x86_64", "4" * 64
    )


def _newest(progress: RecordingProgress) -> str:
    cache = ImageCache(images_dir())
    cfg = load_config(_files().config)
    return upgrade_module.newest_image(cache, get_arch("x86_64"), cfg, False, progress).key


def test_the_newest_is_what_obtain_gives_unless_the_cache_has_newer(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    progress = RecordingProgress()
    assert _newest(progress) == OLD
    _add_image("0", "2025-01-01T00:00:00Z")  # older than the obtained one: not taken
    assert _newest(progress) == OLD
    _add_image("2", "2026-02-01T00:00:00Z")  # pulled or imported before
    assert _newest(progress) == NEW
    assert progress.said == []


def test_when_no_image_can_be_obtained_the_newest_cached_one_is_taken_and_why_said(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nothing(*args: object, **kwargs: object) -> CachedImage:
        raise ImageError("no image index is configured")

    monkeypatch.setattr(upgrade_module, "obtain_for_config", nothing)
    progress = RecordingProgress()
    assert _newest(progress) == OLD
    assert progress.said == [f"no image index is configured; taking the newest cached image, {OLD}"]
    shutil.rmtree(ImageCache(images_dir()).root / OLD)
    with pytest.raises(ImageError, match="no image index"):
        _newest(progress)


# -- the command line ---------------------------------------------------------------------------


def _cli(monkeypatch: pytest.MonkeyPatch, backend: PickyBackend, *args: str) -> int:
    """`pyd upgrade ARGS` in this process, with the fake VM and agent."""
    real = upgrade_module.upgrade
    monkeypatch.setattr(
        upgrade_module,
        "upgrade",
        functools.partial(real, agent=FakeAgent(running=True), guest=PoweredOff(backend)),
    )
    with pytest.raises(SystemExit) as info:
        main(["upgrade", *args])
    return int(info.value.code or 0)


def test_cli_says_already_newest_and_exits_0(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(monkeypatch, vm, "-n", NAME) == 0
    assert f"already uses the newest image, {OLD}" in capsys.readouterr().err


def test_cli_says_rolled_back_and_why_and_exits_non_zero(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_image("2", "2026-02-01T00:00:00Z")
    vm.refuses.add(NEW)
    assert _cli(monkeypatch, vm, "-n", NAME) == 1
    err = capsys.readouterr().err
    assert "rolled back" in err and "could not load kernel" in err and "Traceback" not in err


def test_cli_on_an_unknown_instance_is_a_clear_error(
    vm: PickyBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(monkeypatch, vm, "-n", "ghost") != 0
    err = capsys.readouterr().err
    assert "ghost" in err and "hint:" in err and "Traceback" not in err
