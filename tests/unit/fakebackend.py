"""A VM backend, a host agent and a progress that record what the lifecycle asks of them,
for unit tests."""

from __future__ import annotations

from pyd.errors import PydError
from pyd.instance.files import InstanceFiles
from pyd.lifecycle.agent_proc import Meanwhile
from pyd.lifecycle.progress import Progress
from pyd.vm.backends.base import VMState
from pyd.vm.spec import GuestSpec


class RecordingProgress:
    """A lifecycle.progress.Progress that keeps what it is told."""

    def __init__(self) -> None:
        self.phases: list[str] = []  # begun, in order
        self.said: list[str] = []

    def begin(self, phase: str) -> None:
        self.phases.append(phase)

    def done(self, phase: str, seconds: float) -> None:
        return None

    def info(self, message: str) -> None:
        self.said.append(message)


class FakeAgent:
    """A lifecycle.agent_proc.HostAgent that runs nothing: ready once launched, unless
    `fails` (then launch raises it, as an agent that never gets ready)."""

    def __init__(
        self, running: bool = False, docker_host: str = "unix:///fake/docker.sock"
    ) -> None:
        self.running = running
        self.docker_host = docker_host
        self.fails: PydError | None = None
        self.calls: list[str] = []

    def ready_host(self, files: InstanceFiles) -> str | None:
        return self.docker_host if self.running else None

    def launch(
        self, files: InstanceFiles, name: str, progress: Progress, meanwhile: Meanwhile = None
    ) -> str:
        self.calls.append("launch")
        if meanwhile is not None:
            meanwhile()  # raises as the real one does, after stopping what it launched
        if self.fails is not None:
            raise self.fails
        self.running = True
        return self.docker_host

    def stop(self, files: InstanceFiles, timeout: float = 10) -> None:
        self.calls.append("stop")
        self.running = False


class FakeBackend:
    def __init__(self, state: VMState, name: str = "fake", broken: bool = False) -> None:
        self.name = name
        self.vm = state
        self.broken = broken  # every call fails, as a libvirt that is not running
        self.calls: list[str] = []
        self.specs: list[GuestSpec] = []  # what each start was given
        self.start_fails: PydError | None = None  # start raises it, as a QEMU that will not run
        self.ignores_button = False  # shutdown must force it off, after its timeout
        self.shutdown_timeouts: list[float] = []

    def _call(self, what: str) -> None:
        if self.broken:
            raise PydError(f"cannot connect to {self.name}")
        if what != "state":
            self.calls.append(what)

    def state(self) -> VMState:
        self._call("state")
        return self.vm

    def start(self, spec: GuestSpec) -> None:
        self._call("start")
        self.specs.append(spec)
        if self.start_fails is not None:
            raise self.start_fails
        self.vm = VMState.RUNNING

    def resume(self) -> None:
        self._call("resume")

    def shutdown(self, timeout: float) -> None:
        self._call("shutdown")
        self.shutdown_timeouts.append(timeout)
        if self.ignores_button and self.vm.exists:
            self.calls.append("forced")  # what a backend does once `timeout` has passed
        self.vm = VMState.STOPPED

    def kill(self) -> None:
        self._call("kill")
        if self.vm is not VMState.ABSENT:
            self.vm = VMState.STOPPED

    def delete(self) -> None:
        self._call("delete")
        self.vm = VMState.ABSENT
