"""Building a guest of another architecture: mmdebstrap configures the guest's packages by
running their scripts, so on an x86 host the arm64 binaries must run through the kernel's
binfmt_misc and QEMU's user-mode emulator (Debian's qemu-user-static).

binfmt_misc is often not mounted (containers, minimal hosts) and qemu-user-static only
registers itself where systemd-binfmt or binfmt-support run, so as root pyd mounts it and
registers the handler from qemu-user-static's own binfmt.d file. `arch-test` (which
mmdebstrap requires for foreign architectures) has the last word on whether it works.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pyd.config.arches import Arch
from pyd.errors import EnvironmentProblem

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# /etc overrides the package's file, as systemd-binfmt reads them.
BINFMT_CONF_DIRS = (Path("/etc/binfmt.d"), Path("/usr/lib/binfmt.d"))
_PACKAGES = "qemu-user-static arch-test"


class ForeignExecMissing(EnvironmentProblem):
    """The host cannot run the guest architecture's binaries: a setup step is missing,
    which the user has to take (exit 2 as for bad input: nothing was attempted)."""

    exit_code = 2


class Step(Enum):
    MOUNT = "mount binfmt_misc"
    REGISTER = "register"
    ENABLE = "enable"


@dataclass(frozen=True)
class BinfmtState:
    arch: str  # QEMU's name: aarch64, x86_64
    mounted: bool
    entry: str | None  # text of binfmt_misc/qemu-ARCH; None when not registered
    rule: str | None  # qemu-user-static's register line; None when it is not installed
    root: bool


def is_native(arch: Arch, host_machine: str) -> bool:
    """Whether this host runs `arch`'s binaries without emulation (host_machine normalised)."""
    return arch.name == host_machine


def binfmt_steps(state: BinfmtState) -> list[Step]:
    """Pure: what to do so the kernel hands `state.arch` binaries to QEMU, or a
    ForeignExecMissing saying what the user must do first."""
    steps: list[Step] = []
    if not state.mounted:
        steps.append(Step.MOUNT)
    if state.entry is None or not state.mounted:
        steps.append(Step.REGISTER)
    elif state.entry.splitlines()[:1] != ["enabled"]:
        steps.append(Step.ENABLE)
    if Step.REGISTER in steps and state.rule is None:
        raise ForeignExecMissing(
            f"building an {state.arch} image on this host needs QEMU's user-mode emulator",
            hint=f"sudo apt-get install {_PACKAGES} (or build on an {state.arch} host)",
        )
    if steps and not state.root:
        raise ForeignExecMissing(
            f"{state.arch} binaries cannot run on this host yet "
            f"(binfmt_misc: {', '.join(s.value for s in steps)} needed)",
            hint="run `sudo pyd image build`, which sets it up, or "
            f"`sudo systemctl restart systemd-binfmt` after installing {_PACKAGES}",
        )
    return steps


def register_rule(arch: str, dirs: tuple[Path, ...] = BINFMT_CONF_DIRS) -> str | None:
    """The `:name:type:...` line of qemu-ARCH.conf, the first found in `dirs`."""
    for d in dirs:
        try:
            text = (d / f"qemu-{arch}.conf").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(":"):
                return line
    return None


def read_state(arch: str, root: bool, binfmt_dir: Path = BINFMT_DIR) -> BinfmtState:
    mounted = (binfmt_dir / "register").exists()
    try:
        entry: str | None = (binfmt_dir / f"qemu-{arch}").read_text()
    except OSError:
        entry = None
    return BinfmtState(arch, mounted, entry, register_rule(arch), root)


def ensure_foreign_exec(
    arch: Arch, host_machine: str, root: bool, progress: Callable[[str], None]
) -> None:
    """Makes `arch`'s binaries runnable here (a no-op on a native host), or raises."""
    if is_native(arch, host_machine):
        return
    if not shutil.which("arch-test"):
        raise ForeignExecMissing(
            f"building an {arch.name} image on this host needs arch-test and QEMU's "
            "user-mode emulator",
            hint=f"sudo apt-get install {_PACKAGES}",
        )
    state = read_state(arch.name, root)
    steps = binfmt_steps(state)
    if Step.MOUNT in steps:
        progress("==> binfmt_misc: mount")
        _apply(Step.MOUNT, state)
        # Registrations may predate the mount (they are the kernel's, not the mount's).
        state = read_state(arch.name, root)
        steps = binfmt_steps(state)
    for step in steps:
        progress(f"==> binfmt_misc: {step.value} qemu-{arch.name}")
        _apply(step, state)
    _check_runs(arch)


def _apply(step: Step, state: BinfmtState) -> None:
    try:
        if step is Step.MOUNT:
            subprocess.run(
                ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                check=True,
                capture_output=True,
                text=True,
            )
        elif step is Step.REGISTER:
            assert state.rule is not None  # binfmt_steps refuses otherwise
            (BINFMT_DIR / "register").write_text(state.rule)
        else:
            (BINFMT_DIR / f"qemu-{state.arch}").write_text("1")
    except (OSError, subprocess.CalledProcessError) as e:
        detail = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
        raise EnvironmentProblem(
            f"could not {step.value} for {state.arch} ({detail})",
            hint="inside a container, binfmt_misc is the host's: set it up there "
            f"(apt-get install {_PACKAGES})",
        ) from None


def _check_runs(arch: Arch) -> None:
    proc = subprocess.run(["arch-test", arch.debian], capture_output=True, text=True)
    if proc.returncode != 0 or proc.stdout.strip() != f"{arch.debian}: ok":
        said = (proc.stdout + proc.stderr).strip()
        raise ForeignExecMissing(
            f"{arch.name} binaries still do not run on this host (arch-test: {said})",
            hint=f"check {BINFMT_DIR}/qemu-{arch.name} and that qemu-user-static is installed",
        )
