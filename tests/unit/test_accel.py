import pytest

from pyd.vm.accel import choose_accel

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
