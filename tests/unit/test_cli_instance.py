"""Instance commands on bad input or a broken environment: a message with a hint, exit 1
or 2, no traceback, and nothing deleted. No VM is started here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyd.cli import main as cli_main
from pyd.config.arches import get_arch
from pyd.config.machine import Accel
from pyd.errors import ImageError
from pyd.host.memory import host_memory_mib
from pyd.host.paths import images_dir
from pyd.image.cache import ImageCache
from pyd.instance.disks import create_data_disk
from pyd.instance.files import InstanceFiles
from pyd.instance.provision import instance_keys
from pyd.instance.registry import instance
from pyd.instance.state import load_state
from pyd.lifecycle import start as start_module
from pyd.vm.backends.base import VMState
from tests.unit.fakebackend import FakeAgent, FakeBackend, RecordingProgress
from tests.unit.test_lifecycle_start import _image as _stand_in_image


def _pyd(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYD_HOME": str(home), "DOCKER_CONFIG": str(home / "docker"), **env}
    full["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=full
    )


def _clean(r: subprocess.CompletedProcess[str], code: int) -> None:
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and "hint:" in r.stderr


def test_bad_names_and_values_are_usage_errors(tmp_path: Path) -> None:
    _clean(_pyd(tmp_path, "start", "-n", "Bad_Name"), 2)
    r = _pyd(tmp_path, "start", "--cpus", "zero")
    _clean(r, 2)
    assert "cpus" in r.stderr
    _clean(_pyd(tmp_path, "config", "set", "memory", "lots"), 2)
    _clean(_pyd(tmp_path, "config", "set", "colour", "blue"), 2)


def test_commands_on_a_missing_instance_say_how_to_create_it(tmp_path: Path) -> None:
    for cmd in ("status", "stop", "ssh", "env", "logs"):
        r = _pyd(tmp_path, cmd, "-n", "ghost")
        _clean(r, 2)
        assert "pyd start -n ghost" in r.stderr


def test_config_set_then_show(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "config", "set", "--create", "memory", "3GiB", "-n", "dev")
    assert r.returncode == 0, r.stderr
    assert _pyd(tmp_path, "config", "set", "cpus", "3", "-n", "dev").returncode == 0
    shown = _pyd(tmp_path, "config", "show", "-n", "dev").stdout
    assert 'memory = "3GiB"' in shown and "cpus = 3" in shown


def test_unreachable_libvirt_gives_the_fix_and_keeps_the_data_disk(tmp_path: Path) -> None:
    inst = tmp_path / "instances" / "default"
    inst.mkdir(parents=True)
    (inst / "data.qcow2").write_bytes(b"precious")
    (inst / "config.toml").write_text('backend = "libvirt"\n')  # auto would run QEMU directly
    r = _pyd(tmp_path, "start", LIBVIRT_DEFAULT_URI="qemu+unix:///system?socket=/nonexistent/s")
    _clean(r, 1)
    assert "libvirtd" in r.stderr
    assert (inst / "data.qcow2").read_bytes() == b"precious"


def test_corrupted_state_file_fails_start_without_deleting_anything(tmp_path: Path) -> None:
    assert _pyd(tmp_path, "config", "set", "--create", "backend", "qemu").returncode == 0
    inst = tmp_path / "instances" / "default"
    instance_keys(InstanceFiles(inst))  # made at its first start, as the disks
    (inst / "data.qcow2").write_bytes(b"precious")
    (inst / "state.json").write_text("{garbage")
    r = _pyd(tmp_path, "start")
    _clean(r, 1)
    assert "state.json" in r.stderr and "corrupted" in r.stderr
    assert "remove it" in r.stderr  # the next start writes it again
    assert (inst / "data.qcow2").read_bytes() == b"precious"
    assert (inst / "state.json").read_text() == "{garbage"


def test_corrupted_config_is_reported_not_replaced(tmp_path: Path) -> None:
    inst = tmp_path / "instances" / "default"
    inst.mkdir(parents=True)
    (inst / "config.toml").write_text("cpus = [unclosed\n")
    (inst / "data.qcow2").write_bytes(b"precious")
    r = _pyd(tmp_path, "status")
    _clean(r, 1)
    assert "config.toml" in r.stderr
    assert (inst / "config.toml").read_text() == "cpus = [unclosed\n"


def test_delete_without_a_terminal_needs_force(tmp_path: Path) -> None:
    inst = tmp_path / "instances" / "default"
    inst.mkdir(parents=True)
    (inst / "data.qcow2").write_bytes(b"precious")
    r = _pyd(tmp_path, "delete")
    _clean(r, 2)
    assert (inst / "data.qcow2").exists()


def test_a_file_system_error_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    home = tmp_path / "not-a-dir"
    home.write_text("")
    r = _pyd(home, "config", "set", "--create", "cpus", "2")
    _clean(r, 1)
    assert str(home) in r.stderr


def test_list_shows_a_broken_instance_next_to_good_ones(tmp_path: Path) -> None:
    # The direct-QEMU backend answers "stopped" without a libvirtd to ask.
    for name in ("good", "bad"):
        r = _pyd(tmp_path, "config", "set", "--create", "backend", "qemu", "-n", name)
        assert r.returncode == 0, r.stderr
    (tmp_path / "instances" / "bad" / "config.toml").write_text("cpus = [\n")
    r = _pyd(tmp_path, "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[1:]}
    assert rows == {"bad": "broken", "good": "stopped"}


def test_config_on_a_mistyped_instance_is_refused_and_names_the_real_ones(
    tmp_path: Path,
) -> None:
    assert _pyd(tmp_path, "config", "set", "--create", "cpus", "2", "-n", "dev").returncode == 0
    r = _pyd(tmp_path, "config", "set", "cpus", "3", "-n", "dve")
    _clean(r, 2)
    assert "no instance named 'dve'" in r.stderr
    assert "the instances are dev" in r.stderr and "--create" in r.stderr
    assert not (tmp_path / "instances" / "dve").exists()  # no phantom instance
    r = _pyd(tmp_path, "config", "show", "-n", "nosuch")
    _clean(r, 2)
    assert "the instances are dev" in r.stderr and r.stdout == ""


def test_refused_first_starts_leave_no_instance_directory(tmp_path: Path) -> None:
    too_much = f"{(host_memory_mib() or 0) // 1024 + 2}GiB"  # more than this host has
    for args, says in (
        (("--accel", "nosuch"), "hypervisor"),  # the hint says what the choices mean
        (("--cpus", "zero"), "cpus"),
        (("--memory", too_much), "more than this host has"),
    ):
        r = _pyd(tmp_path, "start", "-n", "dev", *args)
        _clean(r, 2)
        assert says in r.stderr, r.stderr
        assert not (tmp_path / "instances" / "dev").exists(), args


def test_status_shows_the_data_disk_s_own_size_whatever_the_config_says(tmp_path: Path) -> None:
    inst = tmp_path / "instances" / "default"
    inst.mkdir(parents=True)
    create_data_disk(inst / "data.qcow2", 4)
    (inst / "config.toml").write_text("")  # emptied: its disk setting is the default 20
    r = _pyd(tmp_path, "status", "--json", LIBVIRT_DEFAULT_URI="qemu+unix:///system?socket=/no/s")
    assert '"disk_gib": 4' in r.stdout, r.stdout + r.stderr
    assert '"platforms": []' in r.stdout  # known once an agent asked a running guest
    r = _pyd(tmp_path, "status", LIBVIRT_DEFAULT_URI="qemu+unix:///system?socket=/no/s")
    assert re.search(r"^platforms +-$", r.stdout, re.M), r.stdout


def test_ctrl_c_during_start_says_the_vm_keeps_booting_and_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(start_module, "start", interrupted)
    with pytest.raises(SystemExit) as code:
        cli_main.main(["start", "-n", "dev"])
    assert code.value.code == 130
    err = " ".join(capsys.readouterr().err.split())
    assert "interrupted" in err and "keeps booting" in err
    assert "pyd stop -n dev" in err and "pyd start -n dev" in err


def test_start_of_an_instance_whose_key_is_lost_says_which_and_how_back(tmp_path: Path) -> None:
    assert _pyd(tmp_path, "config", "set", "--create", "backend", "qemu").returncode == 0
    inst = tmp_path / "instances" / "default"
    (inst / "data.qcow2").write_bytes(b"precious")  # started before: the guest has its keys
    r = _pyd(tmp_path, "start")
    _clean(r, 1)
    assert "ssh/id_ed25519" in r.stderr and "pyd start --new-keys" in r.stderr
    assert not (inst / "ssh").exists()  # none made behind the user's back
    r = _pyd(tmp_path, "ssh", "--", "true")
    assert r.returncode == 2 and "never started" in r.stderr  # no state.json yet


# -- the guest architecture: `pyd start --arch` ------------------------------------------------


def test_an_unknown_arch_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    r = _pyd(tmp_path, "start", "-n", "dev", "--arch", "sparc64")
    _clean(r, 2)
    assert "sparc64" in r.stderr and "aarch64, x86_64" in r.stderr
    assert not (tmp_path / "instances" / "dev").exists()


def test_an_instance_keeps_the_arch_of_its_first_start(tmp_path: Path) -> None:
    inst = tmp_path / "instances" / "default"
    inst.mkdir(parents=True)
    # Written before pyd kept the arch: the image key names it.
    legacy = '{"ssh_port": 2222, "image_key": "x86_64-0123456789abcdef", "accel": "tcg"}\n'
    (inst / "state.json").write_text(legacy)
    for asked in ("aarch64", "arm64"):
        r = _pyd(tmp_path, "start", "--arch", asked)
        _clean(r, 2)
        text = " ".join(r.stderr.split())
        assert "is an x86_64 guest" in text and "--name NAME --arch aarch64" in text
    assert (inst / "state.json").read_text() == legacy  # nothing rewritten


@pytest.fixture
def arm_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeBackend:
    """An x86_64 host with a private home and image cache; the VM is a fake backend."""
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setenv("PYD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    vm = FakeBackend(VMState.ABSENT)
    monkeypatch.setattr(start_module, "backend_for_config", lambda name, cfg: vm)
    return vm


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_a_foreign_arch_starts_on_its_cached_image_under_tcg(arm_start: FakeBackend) -> None:
    settings = {"memory": "512MiB", "disk": "1GiB"}  # accel stays auto

    def start() -> start_module.StartResult:
        return start_module.start(
            "arm", settings, False, RecordingProgress(), agent=FakeAgent(), arch="arm64"
        )

    # No aarch64 image: pyd says how to build one rather than emulating a build itself.
    with pytest.raises(ImageError, match="no aarch64 image") as info:
        start()
    assert "pyd image build --arch aarch64" in info.value.hint
    assert arm_start.calls == []
    _stand_in_image(ImageCache(images_dir()), get_arch("aarch64"))
    start()
    (spec,) = arm_start.specs
    assert (spec.arch.name, spec.accel, spec.gic) == ("aarch64", Accel.TCG, "3")
    assert spec.accel_cpu == "max,pauth-impdef=on" and spec.kernel.name == "vmlinuz"
    state = load_state(instance("arm").files.state)
    assert state is not None and state.arch == "aarch64"
    assert state.image_key.startswith("aarch64-")


def test_status_and_list_show_the_guest_arch(tmp_path: Path) -> None:
    for name in ("arm", "new"):
        r = _pyd(tmp_path, "config", "set", "--create", "backend", "qemu", "-n", name)
        assert r.returncode == 0, r.stderr
    (tmp_path / "instances" / "arm" / "arch").write_text("aarch64\n")  # its first start failed
    r = _pyd(tmp_path, "status", "--json", "-n", "arm")
    assert '"arch": "aarch64"' in r.stdout, r.stdout + r.stderr
    r = _pyd(tmp_path, "status", "-n", "arm")
    assert re.search(r"^arch +aarch64$", r.stdout, re.M), r.stdout
    r = _pyd(tmp_path, "list")
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    assert lines[0][:3] == ["NAME", "STATE", "ARCH"]
    host = get_arch().name  # a new instance becomes one of the host's arch
    assert {row[0]: row[2] for row in lines[1:]} == {"arm": "aarch64", "new": host}
    r = _pyd(tmp_path, "list", "--json")
    assert '"arch": "aarch64"' in r.stdout and f'"arch": "{host}"' in r.stdout
