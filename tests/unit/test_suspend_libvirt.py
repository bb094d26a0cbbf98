"""LibvirtBackend's save and restore (`pyd suspend`, then `pyd start`) on libvirt's own test
driver: a save file 0600, the domain stopped and still defined, restored running, and a file
that is not a save of this instance refused without touching the domain."""

from __future__ import annotations

import dataclasses
import stat
import uuid
from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.errors import PydError
from pyd.vm.backends.base import SuspendableBackend, VMState
from pyd.vm.backends.libvirt_backend import LibvirtBackend
from tests.unit.test_libvirt_xml import TEST_URI, make_spec


def _backend() -> LibvirtBackend:
    return LibvirtBackend(f"unit-{uuid.uuid4().hex[:8]}", TEST_URI)


def test_save_stops_the_vm_into_a_private_file_and_restore_runs_it_again(tmp_path: Path) -> None:
    backend = _backend()
    assert isinstance(backend, SuspendableBackend)
    spec = make_spec(arch=dataclasses.replace(get_arch("x86_64"), firmware=""))
    save = tmp_path / "suspend.save"
    try:
        backend.start(dataclasses.replace(spec, cpus=3, memory_mib=1536))
        assert backend.shape() == (3, 1536)
        assert backend.emulator_version().count(".") == 2
        backend.save(save)
        assert backend.state() is VMState.STOPPED  # stopped, still defined
        assert stat.S_IMODE(save.stat().st_mode) == 0o600 and save.stat().st_size > 0
        backend.restore(save)
        assert backend.state() is VMState.RUNNING
        with pytest.raises(PydError, match="already running"):
            backend.restore(save)
    finally:
        backend.kill()
        backend.delete()
        backend.close()


def test_a_save_of_another_instance_or_no_save_at_all_is_refused(tmp_path: Path) -> None:
    ours, other = _backend(), _backend()
    spec = make_spec(arch=dataclasses.replace(get_arch("x86_64"), firmware=""))
    save, junk = tmp_path / "other.save", tmp_path / "junk.save"
    junk.write_bytes(b"not a libvirt save image at all")
    try:
        other.start(spec)
        other.save(save)
        ours.start(spec)
        ours.kill()
        with pytest.raises(PydError, match="is not a save of pyd-unit-"):
            ours.restore(save)
        with pytest.raises(PydError, match="not a save libvirt can read"):
            ours.restore(junk)
        assert ours.state() is VMState.STOPPED and other.state() is VMState.STOPPED
        with pytest.raises(PydError, match="nothing to save"):
            ours.save(tmp_path / "never.save")
        assert not (tmp_path / "never.save").exists()
    finally:
        for backend in (ours, other):
            backend.kill()
            backend.delete()
            backend.close()
