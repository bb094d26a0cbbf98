"""The accelerator decision per OS, with the probes' results given as values: linux (kvm),
darwin (hvf, sysctl kern.hv_support), win32 (whpx, WinHvPlatform.dll + WHvGetCapability)."""

import time

import pytest

from pyd.config.machine import AUTO, Accel
from pyd.errors import UsageError
from pyd.vm import accel as accel_module
from pyd.vm.accel import (
    ENABLE_WHPX,
    AccelProbe,
    HostFacts,
    choose_accel,
    interpret,
    probe_accelerator,
    resolve_accel,
)

VMX = frozenset({"fpu", "vmx"})
NONE = frozenset({"fpu", "sse2"})
KVM_OK = HostFacts(kvm_exists=True, kvm_opens=True, cpu_flags=VMX)


@pytest.mark.parametrize(
    ("facts", "ok", "fix"),
    [
        (KVM_OK, True, ""),
        (HostFacts(kvm_exists=True, kvm_opens=True, cpu_flags=frozenset({"svm"})), True, ""),
        # This machine: /dev/kvm opens but the CPU has no vmx/svm; a guest would hang.
        (HostFacts(kvm_exists=True, kvm_opens=True, cpu_flags=NONE), False, "nested"),
        (HostFacts(kvm_exists=True, kvm_opens=False, cpu_flags=VMX), False, "usermod -aG kvm"),
        (HostFacts(kvm_exists=False, cpu_flags=VMX), False, "sudo modprobe kvm_intel"),
        (HostFacts(kvm_exists=False, cpu_flags=frozenset({"svm"})), False, "modprobe kvm_amd"),
    ],
)
def test_linux_kvm_probe(facts: HostFacts, ok: bool, fix: str) -> None:
    probe = interpret("linux", "x86_64", "x86_64", facts)
    assert (probe.accel, probe.ok) == (Accel.KVM, ok)
    assert fix in probe.fix and bool(probe.fix) != ok


def test_arm64_linux_lists_no_vmx_an_openable_dev_kvm_is_the_test() -> None:
    facts = HostFacts(kvm_exists=True, kvm_opens=True, cpu_flags=frozenset({"fp", "asimd"}))
    assert interpret("linux", "aarch64", "aarch64", facts).ok


@pytest.mark.parametrize(
    ("hv_support", "ok", "seen"),
    [
        ("1\n", True, "is 1"),
        ("0\n", False, "is 0"),  # macOS in a VM without nested virtualization
        (None, False, "could not be read"),
    ],
)
def test_darwin_hvf_probe_reads_kern_hv_support(
    hv_support: str | None, ok: bool, seen: str
) -> None:
    for host in ("aarch64", "x86_64"):  # Apple Silicon and Intel Macs alike
        probe = interpret("darwin", host, host, HostFacts(hv_support=hv_support))
        assert (probe.accel, probe.ok) == (Accel.HVF, ok)
        assert seen in probe.detail


@pytest.mark.parametrize(
    ("facts", "ok", "detail", "fix"),
    [
        (HostFacts(whpx_dll=True, whpx_present=True), True, "running", ""),
        (HostFacts(whpx_dll=False, whpx_error="not found"), False, "feature is off", ENABLE_WHPX),
        (HostFacts(whpx_dll=True, whpx_present=False), False, "no hypervisor", "restart"),
        (HostFacts(whpx_dll=True, whpx_error="HRESULT 0x80070005"), False, "0x8007", ENABLE_WHPX),
    ],
)
def test_win32_whpx_probe(facts: HostFacts, ok: bool, detail: str, fix: str) -> None:
    probe = interpret("win32", "x86_64", "x86_64", facts)
    assert (probe.accel, probe.ok) == (Accel.WHPX, ok)
    assert detail in probe.detail
    assert fix in probe.fix and bool(probe.fix) != ok


def test_the_whpx_hint_names_the_feature_and_the_exact_command() -> None:
    assert "Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform" in ENABLE_WHPX
    assert "administrator" in ENABLE_WHPX and "restart" in ENABLE_WHPX


@pytest.mark.parametrize(
    ("system", "host", "guest"),
    [
        ("linux", "x86_64", "aarch64"),
        ("darwin", "aarch64", "x86_64"),  # an x86 guest on Apple Silicon
        ("darwin", "x86_64", "aarch64"),
        ("win32", "x86_64", "aarch64"),
    ],
)
def test_a_foreign_guest_runs_under_tcg_and_that_is_fine(
    system: str, host: str, guest: str
) -> None:
    # Even with a perfect accelerator: hardware accelerators run the host's own arch only.
    facts = HostFacts(True, True, VMX, "1", True, True)
    probe = interpret(system, host, guest, facts)
    assert (probe.accel, probe.ok) == (Accel.TCG, True)
    assert choose_accel(AUTO, system, host, guest, probe).accel == Accel.TCG
    assert choose_accel(AUTO, system, host, guest, probe).warning == ""


# (system, host, facts) -> what auto picks
AUTO_CASES = [
    ("linux", "x86_64", KVM_OK, Accel.KVM),
    ("linux", "x86_64", HostFacts(kvm_exists=True, kvm_opens=True, cpu_flags=NONE), Accel.TCG),
    ("darwin", "aarch64", HostFacts(hv_support="1"), Accel.HVF),  # Apple Silicon: arm64 guest
    ("darwin", "x86_64", HostFacts(hv_support="1"), Accel.HVF),  # Intel Mac: x86_64 guest
    ("darwin", "aarch64", HostFacts(hv_support="0"), Accel.TCG),
    ("win32", "x86_64", HostFacts(whpx_dll=True, whpx_present=True), Accel.WHPX),
    ("win32", "x86_64", HostFacts(), Accel.TCG),
    ("win32", "aarch64", HostFacts(whpx_dll=True, whpx_present=True), Accel.TCG),
    ("freebsd", "x86_64", HostFacts(), Accel.TCG),
]


@pytest.mark.parametrize(("system", "host", "facts", "expected"), AUTO_CASES)
def test_auto_per_os(system: str, host: str, facts: HostFacts, expected: Accel) -> None:
    probe = interpret(system, host, host, facts)
    choice = choose_accel(AUTO, system, host, host, probe)
    assert choice.accel == expected
    # Falling back from a hardware accelerator says so, with the probe's fix.
    fell_back = expected == Accel.TCG and probe.accel != Accel.TCG
    assert bool(choice.warning) == fell_back
    if fell_back:
        assert f"{probe.accel} is unavailable" in choice.warning
        assert "software emulation" in choice.warning
        assert choice.fix == probe.fix


def test_auto_on_windows_without_the_feature_warns_with_the_enable_command() -> None:
    probe = interpret("win32", "x86_64", "x86_64", HostFacts())
    choice = choose_accel(AUTO, "win32", "x86_64", "x86_64", probe)
    assert choice.accel == Accel.TCG
    assert "whpx is unavailable" in choice.warning and "Hypervisor Platform" in choice.warning
    assert choice.fix == ENABLE_WHPX


def test_a_named_accelerator_the_probe_doubts_is_kept_with_a_warning() -> None:
    # libvirt's daemon may open /dev/kvm when this user cannot: the name asked for stands.
    probe = interpret("linux", "x86_64", "x86_64", HostFacts(kvm_exists=True, cpu_flags=VMX))
    choice = choose_accel("kvm", "linux", "x86_64", "x86_64", probe)
    assert choice.accel == Accel.KVM
    assert "kvm looks unavailable" in choice.warning and "usermod" in choice.fix
    assert choose_accel("tcg", "linux", "x86_64", "x86_64", probe).warning == ""


@pytest.mark.parametrize(
    ("accel", "system", "owner"),
    [("hvf", "linux", "macOS"), ("whpx", "darwin", "Windows"), ("kvm", "win32", "Linux")],
)
def test_another_os_accelerator_is_refused(accel: str, system: str, owner: str) -> None:
    probe = AccelProbe(Accel.TCG, True, "")
    with pytest.raises(UsageError, match=f"{accel} is {owner}'s accelerator") as info:
        choose_accel(accel, system, "x86_64", "x86_64", probe)
    assert "accel auto" in info.value.hint


@pytest.mark.parametrize("accel", ["kvm", "hvf", "whpx"])
def test_a_hardware_accelerator_for_a_foreign_guest_is_refused(
    accel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(accel_module, "host_arch", lambda: "x86_64")
    with pytest.raises(UsageError, match=f"{accel} cannot run an aarch64 guest") as info:
        resolve_accel(accel, "aarch64")
    assert "accel tcg" in info.value.hint
    assert resolve_accel("tcg", "aarch64").accel == "tcg"
    assert resolve_accel("auto", "aarch64").accel == "tcg"


def test_resolve_accel_probes_this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge on this Linux machine, with the probe's facts given: the warning reaches
    the choice."""
    monkeypatch.setattr(accel_module, "host_arch", lambda: "x86_64")
    monkeypatch.setattr(accel_module, "host_system", lambda: "linux")
    monkeypatch.setattr(accel_module, "_kvm_facts", lambda: KVM_OK)
    assert resolve_accel(AUTO).accel == Accel.KVM and resolve_accel(AUTO).warning == ""
    doubtful = HostFacts(kvm_exists=True, kvm_opens=True, cpu_flags=NONE)
    monkeypatch.setattr(accel_module, "_kvm_facts", lambda: doubtful)
    choice = resolve_accel(AUTO)
    assert choice.accel == Accel.TCG and "no vmx/svm" in choice.warning
    with pytest.raises(UsageError, match="hvf is macOS's accelerator"):
        resolve_accel("hvf")


def test_probe_accelerator_is_cheap_here() -> None:
    started = time.monotonic()
    probe = probe_accelerator()
    assert time.monotonic() - started < 0.1
    assert probe.accel in (Accel.KVM, Accel.TCG) and probe.detail
