import pytest

from pyd.errors import UsageError
from pyd.vm import accel as accel_module
from pyd.vm.accel import choose_accel, resolve_accel

VMX = frozenset({"fpu", "vmx"})
NONE = frozenset({"fpu", "sse2"})


@pytest.mark.parametrize(
    ("system", "opens", "flags", "expected"),
    [
        ("Linux", True, VMX, "kvm"),
        ("Linux", True, frozenset({"svm"}), "kvm"),
        # This machine: /dev/kvm opens but the CPU has no vmx/svm; a guest would hang.
        ("Linux", True, NONE, "tcg"),
        ("Linux", False, VMX, "tcg"),
        ("Darwin", False, NONE, "hvf"),
        ("Windows", False, NONE, "whpx"),
        ("FreeBSD", True, VMX, "tcg"),
    ],
)
def test_choose_accel(system: str, opens: bool, flags: frozenset[str], expected: str) -> None:
    assert choose_accel(system, opens, flags) == expected


@pytest.mark.parametrize(
    ("system", "opens", "flags", "host", "guest", "expected"),
    [
        # Hardware accelerators run the host's own architecture only.
        ("Linux", True, VMX, "x86_64", "aarch64", "tcg"),
        ("Darwin", False, NONE, "aarch64", "x86_64", "tcg"),
        ("Windows", False, NONE, "x86_64", "aarch64", "tcg"),
        # arm64 Linux lists no vmx/svm: an openable /dev/kvm is the test.
        ("Linux", True, frozenset({"fp", "asimd"}), "aarch64", "aarch64", "kvm"),
        ("Linux", False, frozenset({"fp", "asimd"}), "aarch64", "aarch64", "tcg"),
        ("Darwin", False, NONE, "aarch64", "aarch64", "hvf"),  # Apple Silicon
    ],
)
def test_choose_accel_for_a_guest_arch(
    system: str, opens: bool, flags: frozenset[str], host: str, guest: str, expected: str
) -> None:
    assert choose_accel(system, opens, flags, host, guest) == expected


@pytest.mark.parametrize("accel", ["kvm", "hvf", "whpx"])
def test_a_hardware_accelerator_for_a_foreign_guest_is_refused(
    accel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel_module, "host_arch", lambda: "x86_64")
    with pytest.raises(UsageError, match=f"{accel} cannot run an aarch64 guest") as info:
        resolve_accel(accel, "aarch64")
    assert "accel tcg" in info.value.hint
    assert resolve_accel("tcg", "aarch64") == "tcg"
    assert resolve_accel("auto", "aarch64") == "tcg"
    assert resolve_accel(accel, "x86_64") == accel
