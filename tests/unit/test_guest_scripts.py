"""The guest's boot scripts (guest-image/overlay/usr/lib/pyd) on this machine, in a sandbox:
their absolute paths (/usr/lib/pyd, /run/pyd, /sys/class/net, /dev/kmsg...) point into a
temporary directory, and the tools that would change this machine (ip, nft,
iptables-restore, modprobe) are stand-ins that record their arguments and input. The script
under test runs under the system's POSIX sh, as this busybox would run its own ip and
modprobe rather than the stand-ins; the scripts it starts run under busybox sh (their
shebang)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyd.resources import data_dir

pytestmark = pytest.mark.skipif(
    not os.path.exists("/usr/bin/busybox"), reason="needs busybox, where the guest has it"
)

SCRIPTS = data_dir("guest-image") / "overlay" / "usr" / "lib" / "pyd"
# Each stand-in appends "NAME ARGS" to calls.log, and its stdin to NAME.in when it has one.
_STAND_IN = """#!/bin/sh
echo "${0##*/} $*" >> "$SANDBOX/calls.log"
[ -t 0 ] || cat >> "$SANDBOX/${0##*/}.in"
exit 0
"""
_TOOLS = ("ip", "nft", "iptables-restore", "modprobe")
_MOVED = (
    "/usr/lib/pyd",
    "/run/pyd",
    "/sys/class/net",
    "/dev/kmsg",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/var/log",
    "/proc",
    "/usr/share/qemu",
)


@dataclass
class Sandbox:
    root: Path

    def path(self, guest_path: str) -> Path:
        return self.root / guest_path.lstrip("/")

    def install(self) -> None:
        """The scripts, with every absolute path they use moved into the sandbox."""
        lib = self.path("/usr/lib/pyd")
        lib.mkdir(parents=True)
        for script in SCRIPTS.iterdir():
            text = script.read_text()
            for guest in _MOVED:
                text = text.replace(guest, str(self.path(guest)))
            text = text.replace("nice -n 19 ", "")  # not allowed to lower priority here
            if script.name == "lib.sh":
                text = text.replace("PATH=/usr/sbin:", f"PATH={self.root / 'bin'}:$PATH:")
            (lib / script.name).write_text(text)
            (lib / script.name).chmod(script.stat().st_mode)
        # The DNS relay a stand-in that cannot set up (status 2): network's loop ends.
        (lib / "dns-relay").write_text(_STAND_IN.replace("exit 0", "exit 2"))
        for made in ("/run/pyd", "/sys/class/net", "/etc", "/proc", "/dev", "/var/log"):
            self.path(made).mkdir(parents=True, exist_ok=True)
        self.path("/proc/uptime").write_text("12.34 5.67\n")
        self.path("/proc/sys/net/ipv4").mkdir(parents=True)
        self.path("/run/pyd/env").write_text("")
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        for tool in _TOOLS:
            (bin_dir / tool).write_text(_STAND_IN)
            (bin_dir / tool).chmod(0o755)

    def nic(self, name: str, driver: str) -> None:
        """/sys/class/net/NAME, its device bound to `driver` (virtio_net for QEMU's NICs)."""
        drivers = self.path(f"/sys/bus/drivers/{driver}")
        drivers.mkdir(parents=True, exist_ok=True)
        device = self.path(f"/sys/devices/{name}")
        device.mkdir(parents=True)
        (device / "driver").symlink_to(drivers)
        net = self.path(f"/sys/class/net/{name}")
        net.mkdir()
        (net / "device").symlink_to(device)

    def run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ["PATH"], "SANDBOX": str(self.root)}
        argv = ["sh", str(self.path(f"/usr/lib/pyd/{script}")), *args]
        return subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
        )

    def calls(self) -> list[str]:
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def stdin_of(self, tool: str) -> str:
        return (self.root / f"{tool}.in").read_text()

    def kernel_log(self) -> str:
        kmsg = self.path("/dev/kmsg")
        return kmsg.read_text() if kmsg.exists() else ""


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    sandbox = Sandbox(tmp_path)
    sandbox.install()
    return sandbox


def test_network_configures_every_virtio_nic_and_routes_by_the_first(box: Sandbox) -> None:
    box.nic("eth0", "virtio_net")
    box.nic("eth1", "virtio_net")
    box.nic("docker0", "bridge")  # dockerd's, being made meanwhile: not an uplink
    done = box.run("network")
    assert done.returncode == 0, done.stderr + box.kernel_log()
    ip = [c for c in box.calls() if c.startswith("ip ")]
    assert ip == [
        "ip link set lo up",
        "ip link set eth0 up",
        "ip addr add 10.0.2.15/24 dev eth0",
        "ip route add default via 10.0.2.2 dev eth0",
        "ip link set eth1 up",
        "ip addr add 10.0.2.15/24 dev eth1",
    ]
    nat = box.stdin_of("iptables-restore")
    assert "-A POSTROUTING -o eth0 ! -s 10.0.2.15 -j MASQUERADE" in nat
    assert "-A POSTROUTING -o eth1 ! -s 10.0.2.15 -j MASQUERADE" in nat
    assert "docker0 ! -s" not in nat
    assert box.path("/proc/sys/net/ipv4/ip_forward").read_text() == "1\n"
    # The guest's DNS is its relay, on its own address, falling back to QEMU's.
    assert box.path("/etc/resolv.conf").resolve().read_text() == "nameserver 10.0.2.15\n"
    assert "dns-relay 10.0.2.15 10.0.2.3 10.0.2.2" in box.calls()
    hosts = box.path("/etc/hosts").read_text()
    assert "10.0.2.2\thost.docker.internal gateway.docker.internal\n" in hosts


def test_host_access_off_cuts_every_nic_before_any_comes_up(box: Sandbox) -> None:
    box.nic("eth0", "virtio_net")
    box.nic("eth1", "virtio_net")
    box.path("/run/pyd/env").write_text("PYD_HOST_ACCESS=off\nPYD_HOST_PORTS='8080 9090'\n")
    done = box.run("network")
    assert done.returncode == 0, done.stderr + box.kernel_log()
    calls = box.calls()
    assert calls.index("nft -f -") < calls.index("ip link set eth0 up")
    rules = box.stdin_of("nft")
    for n, nic in enumerate(("eth0", "eth1")):
        hook = f'type filter hook egress device "{nic}" priority 0; policy drop;'
        assert f"chain egress{n} {{\n    {hook}" in rules
    assert "@ll,288,16 { 8080, 9090 } accept" in rules


def test_host_access_rules_that_fail_keep_every_nic_down(box: Sandbox) -> None:
    box.nic("eth0", "virtio_net")
    box.path("/run/pyd/env").write_text("PYD_HOST_ACCESS=off\n")
    (box.root / "bin" / "nft").write_text("#!/bin/sh\nexit 1\n")
    done = box.run("network")
    assert done.returncode == 1
    assert "the rules failed to load; eth0 stay down" in box.kernel_log()
    assert not [c for c in box.calls() if c.startswith("ip link set eth")]


def test_network_without_a_nic_says_so(box: Sandbox) -> None:
    box.nic("docker0", "bridge")
    done = box.run("network")
    assert done.returncode == 1
    assert "no network interface" in box.kernel_log()


def test_an_unknown_service_fails_loudly(box: Sandbox) -> None:
    done = box.run("service", "dockrd")
    assert done.returncode == 2
    assert "unknown service 'dockrd'" in box.kernel_log()


def test_hostaccess_and_firewall_refuse_a_call_without_a_nic(box: Sandbox) -> None:
    assert box.run("hostaccess", "10.0.2.15/24", "10.0.2.2", "10.0.2.3", "").returncode == 2
    assert box.run("firewall", "10.0.2.15/24").returncode == 2
    assert box.calls() == []


# Debian's qemu-user line for aarch64 (/usr/share/qemu/binfmt.d/qemu-aarch64.conf), flags last.
_QEMU_AARCH64 = (
    r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    r"\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff"
    r"\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF"
)


def test_binfmt_registers_the_packaged_emulator_with_pyds_flags(box: Sandbox) -> None:
    confs = box.path("/usr/share/qemu/binfmt.d")
    confs.mkdir(parents=True)
    (confs / "qemu-aarch64.conf").write_text(_QEMU_AARCH64 + "\n")
    binfmt = box.path("/proc/sys/fs/binfmt_misc")
    binfmt.mkdir(parents=True)
    (binfmt / "register").write_text("")  # binfmt_misc mounted: a plain file stands in
    done = box.run("binfmt")
    assert done.returncode == 0, done.stderr + box.kernel_log()
    # Written as read (the kernel decodes the \x escapes), with F (opened at registration).
    assert (binfmt / "register").read_text() == _QEMU_AARCH64.removesuffix("OPF") + "POF\n"
    assert "modprobe binfmt_misc" in box.calls()
    assert box.path("/run/pyd/binfmt.done").exists()  # what the agent waits for
    assert "binfmt 12.34" in box.path("/run/pyd/timeline").read_text()


def test_binfmt_without_an_emulator_fails_and_still_marks_done(box: Sandbox) -> None:
    binfmt = box.path("/proc/sys/fs/binfmt_misc")
    binfmt.mkdir(parents=True)
    (binfmt / "register").write_text("")
    done = box.run("binfmt")
    assert done.returncode == 1  # logged to the kernel (the sandbox's kmsg keeps the last line)
    assert (binfmt / "register").read_text() == ""
    assert box.path("/run/pyd/binfmt.done").exists()
