"""`backend = "auto"`: which backend runs an instance, and why (vm/backends/choice.py), for
linux, darwin and win32; the backend a boot recorded in state.json; the libvirt probe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyd.config.machine import Accel
from pyd.config.settings import BackendName
from pyd.config.store import load_config
from pyd.errors import PydError
from pyd.instance.registry import instance
from pyd.instance.state import InstanceState, load_state, parse_state, save_state
from pyd.lifecycle.status import instance_status
from pyd.vm.backends import choice as choice_module
from pyd.vm.backends.base import VMState
from pyd.vm.backends.choice import (
    NO_BINDING,
    BackendChoice,
    BackendUnavailable,
    backend_kind,
    backends_to_stop,
    choose_backend,
    libvirt_answers,
    resolve_backend,
)
from pyd.vm.backends.libvirt_backend import LibvirtBackend
from pyd.vm.backends.qemu_process import QemuProcessBackend
from tests.unit.fakebackend import FakeBackend

AUTO, LIBVIRT, QEMU = BackendName.AUTO, BackendName.LIBVIRT, BackendName.QEMU
SYSTEMS = ("linux", "darwin", "win32")
URI = "qemu:///system"
NOWHERE = "qemu+unix:///system?socket=/nonexistent"


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("setting", [LIBVIRT, QEMU])
@pytest.mark.parametrize("recorded", [None, LIBVIRT, QEMU])
@pytest.mark.parametrize("answers", [True, False])
def test_an_explicit_setting_always_wins(
    system: str, setting: BackendName, recorded: BackendName | None, answers: bool
) -> None:
    got = choose_backend(setting, system, answers, recorded, URI)
    assert got == BackendChoice(setting, "set in config.toml")


def test_auto_on_linux_is_libvirt_where_its_daemon_answers() -> None:
    got = choose_backend(AUTO, "linux", True, None, URI)
    assert got == (LIBVIRT, "its daemon answers at qemu:///system")


def test_auto_on_linux_without_libvirtd_runs_qemu_and_says_where_it_asked() -> None:
    got = choose_backend(AUTO, "linux", False, None, NOWHERE, "No such file or directory")
    assert got == (QEMU, f"libvirtd does not answer at {NOWHERE} (No such file or directory)")
    assert choose_backend(AUTO, "linux", False, None, URI).reason == (
        "libvirtd does not answer at qemu:///system"
    )


def test_auto_on_linux_without_the_binding_runs_qemu_and_says_so() -> None:
    assert choose_backend(AUTO, "linux", False, None, "", NO_BINDING) == (QEMU, NO_BINDING)


@pytest.mark.parametrize("system", ["darwin", "win32"])
@pytest.mark.parametrize("answers", [True, False])
def test_auto_on_macos_and_windows_runs_qemu_directly(system: str, answers: bool) -> None:
    # Even a libvirtd that answers (Homebrew's) is not used: it has no network driver.
    assert choose_backend(AUTO, system, answers, None, URI) == (QEMU, f"auto on {system}")


@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("answers", [True, False])
def test_auto_keeps_qemu_once_an_instance_booted_with_it(system: str, answers: bool) -> None:
    # libvirtd came up since: the VM QEMU runs is not looked for under libvirt.
    assert choose_backend(AUTO, system, answers, QEMU, URI) == (QEMU, "recorded when it booted")


@pytest.mark.parametrize("system", SYSTEMS)
def test_auto_keeps_libvirt_once_an_instance_booted_with_it(system: str) -> None:
    assert choose_backend(AUTO, system, True, LIBVIRT, URI) == (
        LIBVIRT,
        "recorded when it booted",
    )


@pytest.mark.parametrize(
    ("system", "start"),
    [
        ("linux", "sudo systemctl start libvirtd"),
        ("darwin", "brew services start libvirt"),
        ("win32", "libvirt's service"),
    ],
)
def test_a_libvirt_instance_is_never_moved_to_qemu_while_libvirtd_is_down(
    system: str, start: str
) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        choose_backend(AUTO, system, False, LIBVIRT, URI, name="dev")
    e = caught.value
    assert isinstance(e, PydError) and e.exit_code == 1
    assert e.message == (
        "instance 'dev' runs under libvirt (backend auto keeps the backend it booted with), "
        "and libvirtd does not answer at qemu:///system"
    )
    assert start in e.hint
    assert "`pyd stop -n dev` once libvirtd answers" in e.hint
    assert "`pyd config set backend qemu -n dev`" in e.hint
    assert e.choice == (LIBVIRT, "recorded when it booted")


def test_the_default_instance_s_hint_needs_no_name_and_a_missing_binding_is_named() -> None:
    with pytest.raises(BackendUnavailable) as caught:
        choose_backend(AUTO, "linux", False, LIBVIRT, "", NO_BINDING)
    assert caught.value.message.endswith(f"libvirtd does not answer ({NO_BINDING})")
    assert "`pyd stop` once" in caught.value.hint
    assert "`pyd config set backend qemu`" in caught.value.hint


# --- state.json keeps the backend ---------------------------------------------------------


def test_state_keeps_the_backend_and_reads_files_written_before_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    save_state(path, InstanceState(2222, "x86_64-abc", Accel.TCG, "x86_64", LIBVIRT))
    assert json.loads(path.read_text())["backend"] == "libvirt"
    assert load_state(path) == InstanceState(2222, "x86_64-abc", Accel.TCG, "x86_64", LIBVIRT)
    old = '{"ssh_port": 2222, "image_key": "x86_64-abc", "accel": "tcg"}'
    assert parse_state(old, "s").backend is None


@pytest.mark.parametrize("value", ['"auto"', '"vbox"', "3"])
def test_a_state_file_naming_no_backend_that_ran_is_corrupted(value: str) -> None:
    text = f'{{"ssh_port": 2222, "image_key": "x86_64-abc", "accel": "tcg", "backend": {value}}}'
    with pytest.raises(PydError, match="is corrupted"):
        parse_state(text, "state.json")


# --- resolve_backend: the edge, with its probe --------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYD_HOME", str(tmp_path))
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    return tmp_path


def _write(name: str, config: str, backend: BackendName | None = None) -> None:
    files = instance(name).files
    files.root.mkdir(parents=True, exist_ok=True)
    files.config.write_text(config)
    if backend is not None:
        save_state(files.state, InstanceState(2222, "x86_64-abc", Accel.TCG, "x86_64", backend))


class Probe:
    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, uri: str) -> tuple[bool, str]:
        self.asked.append(uri)
        return self.answers, "" if self.answers else "Connection refused"


def test_auto_asks_libvirt_at_the_uri_pyd_would_use(home: Path) -> None:
    _write("dev", 'libvirt_uri = "qemu:///session"\n')
    probe = Probe(True)
    cfg = load_config(instance("dev").files.config)
    got = resolve_backend("dev", cfg, "linux", probe)
    assert got == (LIBVIRT, "its daemon answers at qemu:///session") and probe.asked == [
        "qemu:///session"
    ]


@pytest.mark.parametrize(
    ("config", "system", "recorded"),
    [
        ('backend = "qemu"\n', "linux", None),
        ('backend = "libvirt"\n', "linux", QEMU),
        ("", "darwin", None),
        ("", "win32", None),
        ("", "linux", QEMU),  # recorded: nothing to ask
    ],
)
def test_libvirt_is_asked_only_when_the_answer_matters(
    home: Path, config: str, system: str, recorded: BackendName | None
) -> None:
    _write("dev", config, recorded)
    probe = Probe(True)
    resolve_backend("dev", load_config(instance("dev").files.config), system, probe)
    assert probe.asked == []


def test_a_recorded_libvirt_is_asked_and_kept(home: Path) -> None:
    _write("dev", "", LIBVIRT)
    probe = Probe(True)
    got = resolve_backend("dev", load_config(instance("dev").files.config), "darwin", probe)
    assert got == (LIBVIRT, "recorded when it booted") and len(probe.asked) == 1


def test_the_real_probe_answers_no_at_once_where_nothing_listens() -> None:
    began = time.monotonic()
    answers, why = libvirt_answers(NOWHERE)
    assert time.monotonic() - began < 0.2
    assert not answers and "/nonexistent" in why


def test_auto_runs_qemu_when_libvirt_s_socket_does_not_exist(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Integration, no VM: the real probe against a socket that is not there."""
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", NOWHERE)
    _write("dev", "")
    choice = resolve_backend("dev", load_config(instance("dev").files.config), "linux")
    assert choice.name is QEMU and choice.reason.startswith(
        f"libvirtd does not answer at {NOWHERE}"
    )
    (backend,), why = backends_to_stop("dev")
    assert isinstance(backend, QemuProcessBackend) and why == ""


def test_stop_finds_a_recorded_libvirt_vm_even_while_libvirtd_is_down(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its connection error is then told, rather than the VM taken for stopped.
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", NOWHERE)
    _write("dev", "", LIBVIRT)
    (backend,), why = backends_to_stop("dev")
    assert isinstance(backend, LibvirtBackend) and backend.uri == NOWHERE and why == ""
    with pytest.raises(PydError, match="cannot connect to libvirt"):
        backend.state()


def test_a_boot_records_which_backend_ran_it(home: Path) -> None:
    files = instance("dev").files
    assert backend_kind(QemuProcessBackend("dev", files)) is QEMU
    assert backend_kind(LibvirtBackend("dev", URI)) is LIBVIRT
    assert backend_kind(FakeBackend(VMState.ABSENT)) is None  # a test's own


def test_the_module_probe_is_the_default(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = Probe(False)
    monkeypatch.setattr(choice_module, "libvirt_answers", probe)
    _write("dev", 'libvirt_uri = "qemu:///system"\n')
    got = resolve_backend("dev", load_config(instance("dev").files.config), "linux")
    assert got.name is QEMU and probe.asked == ["qemu:///system"]


def test_status_says_which_backend_and_why(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYD_CACHE_DIR", str(home / "cache"))
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", NOWHERE)
    _write("dev", "")
    st = instance_status(instance("dev"))
    assert st.backend == "qemu" and st.backend_reason.startswith("libvirtd does not answer at")
    assert st.to_json()["backend_reason"] == st.backend_reason
    _write("dev", "", LIBVIRT)  # booted under libvirt, which is down now
    st = instance_status(instance("dev"))
    assert (st.backend, st.backend_reason) == ("libvirt", "recorded when it booted")
    assert st.vm == "unknown" and "libvirtd does not answer" in st.error
    assert "pyd config set backend qemu -n dev" in st.hint


def test_pyd_status_prints_the_backend_with_its_reason(tmp_path: Path) -> None:
    env = {**os.environ, "PYD_HOME": str(tmp_path), "PYD_CACHE_DIR": str(tmp_path / "cache")}
    env["LIBVIRT_DEFAULT_URI"], env["COLUMNS"] = NOWHERE, "200"
    run = [sys.executable, "-m", "pyd"]
    made = subprocess.run([*run, "config", "set", "--create", "cpus", "2"], env=env, check=False)
    assert made.returncode == 0
    r = subprocess.run([*run, "status"], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr  # stopped
    assert f"backend      qemu: libvirtd does not answer at {NOWHERE}" in r.stdout
    assert "backend_reason" not in r.stdout
    r = subprocess.run([*run, "status", "--json"], env=env, capture_output=True, text=True)
    shown = json.loads(r.stdout)
    assert shown["backend"] == "qemu" and "does not answer" in shown["backend_reason"]


def test_pyd_config_set_backend_auto_is_accepted(tmp_path: Path) -> None:
    env = {**os.environ, "PYD_HOME": str(tmp_path)}
    run = [sys.executable, "-m", "pyd", "config", "set", "--create", "backend"]
    r = subprocess.run([*run, "auto", "-n", "dev"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'backend = "auto"' in (tmp_path / "instances/dev/config.toml").read_text()
    r = subprocess.run([*run, "vbox", "-n", "dev"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "must be one of auto, libvirt, qemu" in r.stderr
