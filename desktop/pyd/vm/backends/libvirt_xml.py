"""The libvirt domain XML for a pyd guest, as data (pure). It mirrors qemu_cmdline.qemu_argv:
the same machine, CPU, firmware, direct kernel boot, disks and loopback-only SSH forward,
so a guest behaves the same under either backend.

Built with ElementTree, never string formatting: a path holding `&` or `<` is escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from pyd.config.machine import Accel
from pyd.errors import UsageError
from pyd.vm.backends.qemu_cmdline import TB_CACHE_MIB, kernel_cmdline
from pyd.vm.spec import GuestSpec

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
PYD_NS = "https://pyd.dev/xmlns/libvirt-domain/1"

# Registering is idempotent; it only makes the output read `qemu:`/`pyd:` instead of `ns0:`.
ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace("pyd", PYD_NS)

# libvirt's <domain type> per accelerator. libvirt has no Windows Hypervisor Platform driver.
DOMAIN_TYPES = {Accel.TCG: "qemu", Accel.KVM: "kvm", Accel.HVF: "hvf"}
# vmconfig/accel.toml's -cpu model -> libvirt's <cpu mode>.
CPU_MODES = {"max": "maximum", "host": "host-passthrough"}
NET_ID = "pydnet"
# The passthrough NIC is invisible to libvirt's PCI address allocation, and on q35 QEMU's own
# pick collides with libvirt's ("slot 1 function 0 not available"). libvirt fills root ports
# from slot 2 upwards and reserves 0x1b (sound), 0x1d (USB), 0x1e (DMI bridge) and 0x1f (LPC,
# SATA, SMBus); 0x1c is none of those.
NET_PCI_SLOT = 0x1C
# QEMU runs as root (uid/gid 0, "+" = numeric) without relabelling pyd's files.
ROOT_DAC_LABEL = "+0:+0"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _pcie_bus(machine: str) -> str:
    # PCI Express machines (q35, arm virt) call their root bus pcie.0; i440fx calls it pci.0.
    return "pci.0" if machine.startswith(("pc", "i440fx")) else "pcie.0"


def domain_type(accel: Accel) -> str:
    try:
        return DOMAIN_TYPES[accel]
    except KeyError:
        raise UsageError(
            f"libvirt cannot run guests with accelerator {accel!r}",
            hint="use the direct QEMU backend: pyd config set backend qemu",
        ) from None


def domain_xml(
    name: str,
    spec: GuestSpec,
    *,
    instance: str,
    firmware: Path | None,
    run_as_root: bool = False,
    uuid: str | None = None,
) -> str:
    """The domain `name` for pyd instance `instance`. `firmware` is the resolved absolute path
    of spec.arch.firmware (None when the arch uses QEMU's default). `run_as_root` keeps QEMU
    running as root with files unrelabelled: root's qemu:///system otherwise runs QEMU as an
    unprivileged user that cannot open disks under /root. `uuid` is the defined domain's:
    libvirt refuses to redefine a name under another UUID."""
    if spec.arch.firmware and firmware is None:
        raise ValueError(f"{spec.arch.firmware} must be resolved to a path first")
    if firmware is not None and not firmware.is_absolute():
        raise ValueError(f"firmware path must be absolute: {firmware}")

    domain = ET.Element("domain", {"type": domain_type(spec.accel)})
    _sub(domain, "name", name)
    if uuid is not None:
        _sub(domain, "uuid", uuid)
    metadata = _sub(domain, "metadata")
    _sub(metadata, f"{{{PYD_NS}}}instance", name=instance)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.cpus), placement="static")

    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch=spec.arch.name, machine=spec.arch.machine)
    if firmware is not None:
        _sub(os_el, "loader", str(firmware), type="rom")
    _sub(os_el, "kernel", str(spec.kernel))
    _sub(os_el, "initrd", str(spec.initrd))
    _sub(os_el, "cmdline", kernel_cmdline(spec))

    features = _sub(domain, "features")
    if spec.arch.name == "x86_64":
        # Without <acpi/> libvirt passes -no-acpi: no power button, so no clean shutdown.
        # (arm's virt machine signals the button through a GPIO in the device tree.)
        _sub(features, "acpi")
    if spec.gic:
        _sub(features, "gic", version=spec.gic)
    if spec.accel == Accel.TCG:
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(TB_CACHE_MIB), unit="MiB")

    # "max,pauth-impdef=on": libvirt has no element for a CPU's QEMU properties, so the
    # model gives the mode and the whole value is passed on as a -cpu of its own (below).
    model, _, cpu_props = spec.accel_cpu.partition(",")
    try:
        cpu_mode = CPU_MODES[model]
    except KeyError:
        raise UsageError(
            f"CPU model {spec.accel_cpu!r} has no libvirt equivalent",
            hint=f"vmconfig accel.toml: use one of {', '.join(CPU_MODES)}",
        ) from None
    _sub(domain, "cpu", mode=cpu_mode)
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    for index, disk in enumerate(spec.disks):
        d = _sub(devices, "disk", type="file", device="disk")
        driver = {"name": "qemu", "type": disk.fmt}
        if not disk.readonly:
            driver |= {"discard": "unmap", "detect_zeroes": "unmap"}
        _sub(d, "driver", **driver)
        _sub(d, "source", file=str(disk.path))
        _sub(d, "target", dev=f"vd{chr(ord('a') + index)}", bus="virtio")
        if disk.readonly:
            _sub(d, "readonly")
        _sub(d, "serial", disk.serial)
    _sub(devices, "controller", type="usb", model="none")
    serial = _sub(devices, "serial", type="file")
    _sub(serial, "source", path=str(spec.serial_log))
    _sub(serial, "target", port="0")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="none")

    if run_as_root:
        seclabel = _sub(domain, "seclabel", type="static", model="dac", relabel="no")
        _sub(seclabel, "label", ROOT_DAC_LABEL)

    # libvirt's user-mode <interface> cannot forward ports (only with passt), so the NIC is
    # passed to QEMU as qemu_argv has it: only SSH reachable, and only on loopback.
    commandline = _sub(domain, f"{{{QEMU_NS}}}commandline")
    bus = _pcie_bus(spec.arch.machine)
    for arg in (
        "-netdev",
        f"user,id={NET_ID},hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22",
        "-device",
        f"virtio-net-pci,netdev={NET_ID},bus={bus},addr={NET_PCI_SLOT:#x}",
        # QEMU keeps the last -cpu; libvirt writes its own before these arguments.
        *(["-cpu", spec.accel_cpu] if cpu_props else []),
    ):
        _sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)

    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def instance_of(xml: str) -> str | None:
    """The pyd instance a domain XML belongs to, None for domains pyd did not define."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{{{PYD_NS}}}instance")
    return None if el is None else el.get("name")
