"""A VM backend and a progress that record what the lifecycle asks of them, for unit tests."""

from __future__ import annotations

from pyd.errors import PydError
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


class FakeBackend:
    def __init__(self, state: VMState, name: str = "fake", broken: bool = False) -> None:
        self.name = name
        self.vm = state
        self.broken = broken  # every call fails, as a libvirt that is not running
        self.calls: list[str] = []

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
        self.vm = VMState.RUNNING

    def resume(self) -> None:
        self._call("resume")

    def shutdown(self, timeout: float) -> None:
        self._call("shutdown")
        self.vm = VMState.STOPPED

    def kill(self) -> None:
        self._call("kill")
        if self.vm is not VMState.ABSENT:
            self.vm = VMState.STOPPED

    def delete(self) -> None:
        self._call("delete")
        self.vm = VMState.ABSENT
