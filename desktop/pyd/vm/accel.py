"""Which accelerator QEMU can use here: kvm (Linux), hvf (macOS), whpx (Windows), or tcg
(software emulation).

The probes are a thin edge that gathers HostFacts (is /dev/kvm open, what `sysctl -n
kern.hv_support` prints, whether WinHvPlatform.dll loads and reports a hypervisor); the pure
core (interpret, choose_accel) turns facts into an AccelProbe and an AccelChoice, for any OS
given as a parameter, so tests run the linux, darwin and win32 decisions anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pyd.config.arches import host_arch
from pyd.config.machine import AUTO, NATIVE_ACCEL, Accel, host_system
from pyd.errors import UsageError

# The hardware accelerators run guests of the host's own architecture only.
HARDWARE = frozenset({Accel.KVM, Accel.HVF, Accel.WHPX})
KVM_DEVICE = "/dev/kvm"
SYSCTL = "/usr/sbin/sysctl"
SYSCTL_TIMEOUT = 2.0
WHPX_DLL = "WinHvPlatform.dll"
# WHvGetCapability's code for "is a hypervisor running" (WinHvPlatformDefs.h).
WHV_CAPABILITY_HYPERVISOR_PRESENT = 0
ENABLE_WHPX = (
    "in an administrator PowerShell: Enable-WindowsOptionalFeature -Online "
    "-FeatureName HypervisorPlatform, then restart Windows"
)
_OS_NAMES = {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}


@dataclass(frozen=True)
class HostFacts:
    """What the probes saw; each OS's probe fills only its own fields."""

    kvm_exists: bool = False
    kvm_opens: bool = False
    cpu_flags: frozenset[str] = frozenset()
    hv_support: str | None = None  # `sysctl -n kern.hv_support`'s output; None: not read
    whpx_dll: bool = False  # WinHvPlatform.dll loads (the optional feature is on)
    whpx_present: bool | None = None  # WHvGetCapability(HypervisorPresent); None: failed
    whpx_error: str = ""


@dataclass(frozen=True)
class AccelProbe:
    """The accelerator check `pyd doctor` shows: `accel` is what a guest would use at best,
    `ok` whether it is usable, `detail` what was seen, `fix` the command that fixes it
    ("" when nothing on this host does)."""

    accel: Accel
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator a boot uses; `warning` (and `fix`) when it is not the one asked
    for or not the host's best (software emulation is several times slower)."""

    accel: Accel
    warning: str = ""
    fix: str = ""


# -- the pure core --------------------------------------------------------------------------


def _kvm_module(flags: frozenset[str]) -> str:
    return "kvm_amd" if "svm" in flags else "kvm_intel" if "vmx" in flags else "kvm"


def interpret(system: str, host: str, guest: str, facts: HostFacts) -> AccelProbe:
    """The accelerator check for a guest of `guest` on a `host` CPU running `system`."""
    if guest != host:
        return AccelProbe(
            Accel.TCG,
            True,
            f"an {guest} guest on this {host} machine runs under software emulation "
            "(hardware accelerators run the host's own architecture only)",
        )
    if system == "linux":
        return _kvm_probe(host, facts)
    if system == "darwin":
        return _hvf_probe(facts)
    if system == "win32":
        return _whpx_probe(host, facts)
    return AccelProbe(Accel.TCG, True, f"pyd knows no hardware accelerator on {system}")


def _kvm_probe(host: str, facts: HostFacts) -> AccelProbe:
    # kvm needs both an openable /dev/kvm and, on x86, vmx/svm: a /dev/kvm without them
    # exists on some cloud machines, and a guest there hangs instead of failing. arm64 CPUs
    # list no such flag: an openable /dev/kvm is the whole test there.
    flags_ok = host != "x86_64" or bool(facts.cpu_flags & {"vmx", "svm"})
    if not facts.kvm_exists:
        return AccelProbe(
            Accel.KVM,
            False,
            f"{KVM_DEVICE} does not exist (the kvm module is not loaded)",
            f"sudo modprobe {_kvm_module(facts.cpu_flags)}",
        )
    if not facts.kvm_opens:
        return AccelProbe(
            Accel.KVM,
            False,
            f"{KVM_DEVICE} is not open to this user",
            'sudo usermod -aG kvm "$USER", then log in again',
        )
    if not flags_ok:
        return AccelProbe(
            Accel.KVM,
            False,
            f"{KVM_DEVICE} opens but the CPU offers no vmx/svm (a VM without nested "
            "virtualization): a guest would hang",
            "enable nested virtualization for this VM, or VT-x/AMD-V in the firmware settings",
        )
    return AccelProbe(Accel.KVM, True, f"{KVM_DEVICE} opens and the CPU supports it")


def _hvf_probe(facts: HostFacts) -> AccelProbe:
    seen = (facts.hv_support or "").strip()
    if seen == "1":
        return AccelProbe(Accel.HVF, True, "kern.hv_support is 1 (Hypervisor.framework)")
    detail = (
        "sysctl kern.hv_support could not be read"
        if facts.hv_support is None
        else f"kern.hv_support is {seen or 'empty'}: this Mac offers no Hypervisor.framework "
        "(macOS in a VM without nested virtualization, or a CPU without VT-x)"
    )
    # No command turns it on: it is the hardware's (or the outer hypervisor's) to give.
    return AccelProbe(
        Accel.HVF, False, detail, "none on this Mac: run pyd on a Mac (not in a VM) with VT-x"
    )


def _whpx_probe(host: str, facts: HostFacts) -> AccelProbe:
    if host != "x86_64":
        return AccelProbe(
            Accel.WHPX, False, f"pyd runs WHPX guests on x86_64 Windows only (this is {host})"
        )
    if not facts.whpx_dll:
        return AccelProbe(
            Accel.WHPX,
            False,
            f"{WHPX_DLL} does not load: the Windows Hypervisor Platform feature is off",
            ENABLE_WHPX,
        )
    if facts.whpx_present is None:
        return AccelProbe(
            Accel.WHPX,
            False,
            f"WHvGetCapability failed ({facts.whpx_error or 'no reason given'})",
            ENABLE_WHPX,
        )
    if not facts.whpx_present:
        return AccelProbe(
            Accel.WHPX,
            False,
            "the Windows Hypervisor Platform is installed but no hypervisor runs "
            "(Windows not restarted since, or virtualization is off in the firmware)",
            "restart Windows; if that does not help, enable Intel VT-x/AMD-V (SVM) in the "
            "firmware (BIOS/UEFI) settings",
        )
    return AccelProbe(Accel.WHPX, True, "the Windows Hypervisor Platform is running")


def check_accel(accel: Accel, host: str, guest: str, system: str | None = None) -> None:
    """A UsageError when a hardware accelerator is asked for a guest of another architecture,
    or on an OS that does not have it (hvf is macOS's, whpx Windows', kvm Linux's)."""
    if accel in HARDWARE and guest != host:
        raise UsageError(
            f"{accel} cannot run an {guest} guest on this {host} machine: hardware "
            "accelerators run guests of the host's own architecture only",
            hint="use software emulation (pyd config set accel tcg), or auto, which picks it",
        )
    if system is not None and accel in HARDWARE and NATIVE_ACCEL.get(system) != accel:
        owner = next(_OS_NAMES[s] for s, a in NATIVE_ACCEL.items() if a == accel)
        raise UsageError(
            f"{accel} is {owner}'s accelerator; this host runs {_OS_NAMES.get(system, system)}",
            hint="pyd config set accel auto (it picks this host's own)",
        )


def choose_accel(
    setting: str, system: str, host: str, guest: str, probe: AccelProbe
) -> AccelChoice:
    """Pure decision: the accelerator an `accel` setting (a name, or AUTO) means, given the
    probe's result for this guest. auto falls back to tcg with a warning; a name asked for
    is kept (a false negative of the probe must not block it), with the probe's warning."""
    if setting == AUTO:
        if probe.ok:
            return AccelChoice(probe.accel)
        return AccelChoice(
            Accel.TCG,
            f"{probe.accel} is unavailable ({probe.detail}); the guest runs under software "
            "emulation (tcg), several times slower",
            probe.fix,
        )
    accel = Accel(setting)
    check_accel(accel, host, guest, system)
    if accel == probe.accel and not probe.ok:
        return AccelChoice(accel, f"{accel} looks unavailable: {probe.detail}", probe.fix)
    return AccelChoice(accel)


# -- the edge: probes ---------------------------------------------------------------------


def _kvm_facts() -> HostFacts:
    exists = os.path.exists(KVM_DEVICE)
    try:
        fd = os.open(KVM_DEVICE, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        opens = False
    else:
        os.close(fd)
        opens = True
    return HostFacts(kvm_exists=exists, kvm_opens=opens, cpu_flags=_cpu_flags())


def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return frozenset(flags)


def _hvf_facts() -> HostFacts:
    try:
        done = subprocess.run(
            [SYSCTL, "-n", "kern.hv_support"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SYSCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return HostFacts()
    return HostFacts(hv_support=done.stdout if done.returncode == 0 else None)


def _whpx_facts() -> HostFacts:
    if sys.platform != "win32":
        return HostFacts()
    import ctypes

    try:
        dll = ctypes.WinDLL(WHPX_DLL)
    except OSError as e:
        return HostFacts(whpx_error=str(e))
    get_capability = dll.WHvGetCapability
    get_capability.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.POINTER(ctypes.c_uint32),
    ]
    get_capability.restype = ctypes.c_long  # HRESULT
    # WHV_CAPABILITY is a union of at most a few dozen bytes; HypervisorPresent, a BOOL, is
    # its first four.
    buffer = ctypes.create_string_buffer(64)
    written = ctypes.c_uint32(0)
    hresult = get_capability(
        WHV_CAPABILITY_HYPERVISOR_PRESENT, buffer, len(buffer), ctypes.byref(written)
    )
    if hresult < 0:
        return HostFacts(whpx_dll=True, whpx_error=f"HRESULT 0x{hresult & 0xFFFFFFFF:08x}")
    present = int.from_bytes(buffer.raw[:4], "little") != 0
    return HostFacts(whpx_dll=True, whpx_present=present)


def host_facts(system: str) -> HostFacts:
    """The probes of `system` (this host's OS) only."""
    if system == "linux":
        return _kvm_facts()
    if system == "darwin":
        return _hvf_facts()
    if system == "win32":
        return _whpx_facts()
    return HostFacts()


def probe_accelerator(guest_arch: str | None = None) -> AccelProbe:
    """The accelerator check for a guest of `guest_arch` (default: the host's architecture)
    on this host, for `pyd doctor`: one cheap probe (a file open, a sysctl or a DLL call)."""
    system, host = host_system(), host_arch()
    guest = guest_arch or host
    facts = host_facts(system) if guest == host else HostFacts()
    return interpret(system, host, guest, facts)


def detect_accel(guest: str | None = None) -> Accel:
    """The accelerator `auto` picks for a guest of `guest` (default: the host's
    architecture) on this host."""
    return resolve_accel(AUTO, guest).accel


def resolve_accel(setting: str, guest: str | None = None) -> AccelChoice:
    """What an `accel` setting (a name, or AUTO) means on this host for a guest of `guest`
    (default: the host's architecture), with a warning when it falls back or looks
    unavailable."""
    system, host = host_system(), host_arch()
    guest = guest or host
    if setting != AUTO:
        check_accel(Accel(setting), host, guest, system)  # refused before any probe
    probe = probe_accelerator(guest)
    return choose_accel(setting, system, host, guest, probe)
