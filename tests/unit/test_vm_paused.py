"""A paused VM through each backend's seam: libvirt's test driver (which can suspend and
resume a domain) and the direct-QEMU backend talking QMP to a monitor socket."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from io import BufferedIOBase
from pathlib import Path

import libvirt
import pytest

from pyd.instance.files import InstanceFiles
from pyd.vm.backends.base import VMState
from pyd.vm.backends.libvirt_backend import LibvirtBackend
from pyd.vm.backends.qemu_process import QemuProcessBackend
from pyd.vm.backends.qmp import qmp_reply as _qmp_reply
from pyd.vm.backends.qmp import vm_paused
from tests.unit.qemu_stand_in import holding_pidfile
from tests.unit.qmp_standin import QmpStandIn
from tests.unit.test_libvirt_xml import TEST_URI, make_spec

# -- libvirt ------------------------------------------------------------------------------


@pytest.fixture
def libvirt_vm() -> Iterator[tuple[LibvirtBackend, libvirt.virDomain]]:
    backend = LibvirtBackend(f"unit-{uuid.uuid4().hex[:8]}", TEST_URI)
    backend.start(make_spec())
    dom = backend._connection().lookupByName(backend.name)
    yield backend, dom
    backend.kill()
    backend.delete()
    backend.close()


def test_libvirt_reports_a_suspended_domain_as_paused_and_resumes_it(
    libvirt_vm: tuple[LibvirtBackend, libvirt.virDomain],
) -> None:
    backend, dom = libvirt_vm
    assert backend.state() is VMState.RUNNING
    dom.suspend()  # what `virsh suspend` does
    assert backend.state() is VMState.PAUSED
    assert backend.state().exists
    backend.resume()
    assert backend.state() is VMState.RUNNING
    backend.resume()  # not paused: nothing to do
    assert backend.state() is VMState.RUNNING


def test_stopped_and_absent_do_not_exist() -> None:
    assert not VMState.STOPPED.exists and not VMState.ABSENT.exists
    assert VMState.RUNNING.exists and VMState.PAUSED.exists


# -- direct QEMU: QMP ---------------------------------------------------------------------


def test_query_status_replies() -> None:
    assert vm_paused({"return": {"status": "paused", "running": False, "singlestep": False}})
    assert not vm_paused({"return": {"status": "running", "running": True}})
    assert not vm_paused({"return": {"status": "shutdown", "running": False}})
    assert not vm_paused({"error": {"class": "GenericError", "desc": "no"}})


def test_replies_are_found_past_asynchronous_events() -> None:
    lines = iter(
        [
            b'{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\n',
            b'{"return": {"status": "paused", "running": false}}\n',
        ]
    )
    assert vm_paused(_qmp_reply(lambda: next(lines)))
    with pytest.raises(OSError, match="closed"):
        _qmp_reply(lambda: b"")


class FakeMonitor(QmpStandIn):
    """QEMU's monitor holding a running flag that `stop` and `cont` change."""

    def __init__(self, path: Path) -> None:
        self.running = True
        super().__init__(path)

    def reply(self, command: str, out: BufferedIOBase) -> dict[str, object]:
        if command == "cont":
            self.running = True
            out.write(b'{"event": "RESUME", "timestamp": {}}\n')
        if command == "query-status":
            status = "running" if self.running else "paused"
            return {"return": {"status": status, "running": self.running}}
        return {"return": {}}


@pytest.fixture
def direct_vm(tmp_path: Path) -> Iterator[tuple[QemuProcessBackend, FakeMonitor]]:
    """QEMU's part played by a process that holds the pidfile's lock (as QEMU does for its
    whole life) and a monitor socket. A short directory: unix socket paths are short."""
    root = Path(f"/tmp/pyd-unit-{uuid.uuid4().hex[:8]}")
    root.mkdir()
    files = InstanceFiles(root)
    files.os_disk.write_bytes(b"")
    with holding_pidfile(files.qemu_pid):
        monitor = FakeMonitor(files.qmp_sock)
        try:
            yield QemuProcessBackend("unit", files), monitor
        finally:
            monitor.close()
            for p in root.iterdir():
                p.unlink()
            root.rmdir()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks and unix sockets")
def test_direct_qemu_reports_a_stopped_cpu_as_paused_and_resumes_it(
    direct_vm: tuple[QemuProcessBackend, FakeMonitor],
) -> None:
    backend, monitor = direct_vm
    assert backend.state() is VMState.RUNNING
    monitor.running = False  # QMP `stop`
    assert backend.state() is VMState.PAUSED
    backend.resume()
    assert "cont" in monitor.commands
    assert backend.state() is VMState.RUNNING


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks and unix sockets")
def test_direct_qemu_without_an_answering_monitor_counts_as_running(
    direct_vm: tuple[QemuProcessBackend, FakeMonitor],
) -> None:
    backend, monitor = direct_vm
    monitor.close()
    os.unlink(backend.files.qmp_sock)
    assert backend.state() is VMState.RUNNING


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pidfile locks and unix sockets")
def test_direct_qemu_resumes_a_paused_guest_before_pressing_its_power_button(
    direct_vm: tuple[QemuProcessBackend, FakeMonitor],
) -> None:
    backend, monitor = direct_vm
    monitor.running = False
    backend.shutdown(timeout=0.5)  # the stand-in never powers off: killed after the timeout
    asked = [c for c in monitor.commands if c in ("cont", "system_powerdown")]
    assert asked == ["cont", "system_powerdown"]
    assert backend.state() is VMState.STOPPED
