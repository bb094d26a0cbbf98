"""The libvirt domain XML mirrors the direct QEMU command line, and libvirt itself accepts it
(schema-validated define -> create -> destroy -> undefine on the in-memory test driver)."""

from __future__ import annotations

import dataclasses
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from pyd.config.arches import get_arch
from pyd.config.machine import machine_settings
from pyd.errors import EnvironmentProblem, PydError, UsageError
from pyd.vm.backends.base import VMState
from pyd.vm.backends.libvirt_backend import (
    LibvirtBackend,
    choose_uri,
    connect_hint,
    runs_as_root,
)
from pyd.vm.backends.libvirt_xml import PYD_NS, QEMU_NS, domain_xml, instance_of
from pyd.vm.backends.qemu_cmdline import kernel_cmdline
from pyd.vm.spec import DATA_SERIAL, Disk, GuestSpec

QBOOT = Path("/usr/share/qemu/qboot.rom")
TEST_URI = "test:///default"
Q = f"{{{QEMU_NS}}}"


def make_spec(
    root: Path = Path("/var/pyd/inst"), accel: str = "tcg", **changes: object
) -> GuestSpec:
    machine = machine_settings(accel)
    spec = GuestSpec(
        arch=get_arch("x86_64"),
        accel=accel,
        accel_cpu=machine.cpu,
        cpus=2,
        memory_mib=2048,
        kernel=root / "vmlinux",
        initrd=root / "initrd.img",
        disks=(
            Disk(root / "os.qcow2", "pyd-os"),
            Disk(root / "data.qcow2", DATA_SERIAL),
            Disk(root / "seed.iso", "pyd-seed", fmt="raw", readonly=True),
        ),
        ssh_port=41022,
        serial_log=root / "serial.log",
        cmdline_extra=machine.cmdline,
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def render(spec: GuestSpec | None = None, **kwargs: object) -> ET.Element:
    options: dict[str, object] = {"instance": "dev", "firmware": QBOOT, **kwargs}
    return ET.fromstring(domain_xml("pyd-dev", spec or make_spec(), **options))  # type: ignore[arg-type]


def text(root: ET.Element, path: str) -> str:
    el = root.find(path)
    assert el is not None, f"{path} missing"
    return el.text or ""


def qemu_args(root: ET.Element) -> list[str]:
    return [a.get("value", "") for a in root.iterfind(f"{Q}commandline/{Q}arg")]


def test_tcg_guest_is_a_qemu_domain_with_a_512_mib_translation_cache() -> None:
    root = render()
    assert root.get("type") == "qemu"
    tb = root.find("features/tcg/tb-cache")
    assert tb is not None
    assert (tb.text, tb.get("unit")) == ("512", "MiB")
    cpu = root.find("cpu")
    assert cpu is not None
    assert cpu.get("mode") == "maximum"
    # No -no-acpi: the ACPI power button is how shutdown() reaches the guest.
    assert root.find("features/acpi") is not None


@pytest.mark.parametrize("accel", ["kvm", "hvf"])
def test_hardware_accelerators_pass_the_host_cpu_through(accel: str) -> None:
    root = render(make_spec(accel=accel))
    assert root.get("type") == accel
    cpu = root.find("cpu")
    assert cpu is not None
    assert cpu.get("mode") == "host-passthrough"
    assert root.find("features/tcg") is None


def test_whpx_is_refused_with_the_direct_qemu_backend_as_the_way_out() -> None:
    with pytest.raises(UsageError, match="whpx") as info:
        render(make_spec(accel="whpx"))
    assert "pyd config set backend qemu" in info.value.hint


def test_firmware_is_loaded_as_a_rom_from_its_absolute_path() -> None:
    loader = render().find("os/loader")
    assert loader is not None
    assert (loader.get("type"), loader.text) == ("rom", str(QBOOT))


def test_firmware_must_be_resolved_before_rendering() -> None:
    with pytest.raises(ValueError, match=r"qboot\.rom"):
        render(firmware=None)
    with pytest.raises(ValueError, match="absolute"):
        render(firmware=Path("qboot.rom"))


def test_arches_on_qemus_default_firmware_get_no_loader() -> None:
    spec = make_spec(arch=dataclasses.replace(get_arch("x86_64"), firmware=""))
    assert render(spec, firmware=None).find("os/loader") is None


def test_direct_kernel_boot_uses_the_direct_qemu_command_line() -> None:
    spec = make_spec()
    root = render(spec)
    type_el = root.find("os/type")
    assert type_el is not None
    assert (type_el.get("arch"), type_el.get("machine"), type_el.text) == ("x86_64", "q35", "hvm")
    assert text(root, "os/kernel") == str(spec.kernel)
    assert text(root, "os/initrd") == str(spec.initrd)
    assert text(root, "os/cmdline") == kernel_cmdline(spec)
    assert "mitigations=off" in text(root, "os/cmdline")
    assert (text(root, "vcpu"), text(root, "memory")) == ("2", "2048")
    memory = root.find("memory")
    assert memory is not None
    assert memory.get("unit") == "MiB"


def test_disks_keep_their_order_serials_and_write_modes() -> None:
    disks = render().findall("devices/disk")
    assert [text(d, "serial") for d in disks] == ["pyd-os", DATA_SERIAL, "pyd-seed"]
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb", "vdc"]  # type: ignore[union-attr]
    assert {d.find("target").get("bus") for d in disks} == {"virtio"}  # type: ignore[union-attr]
    os_disk, data, seed = (d.find("driver") for d in disks)
    assert os_disk is not None and data is not None and seed is not None
    for writable in (os_disk, data):
        assert writable.get("type") == "qcow2"
        assert (writable.get("discard"), writable.get("detect_zeroes")) == ("unmap", "unmap")
    assert seed.get("type") == "raw"
    assert seed.get("discard") is None
    assert disks[2].find("readonly") is not None
    assert disks[0].find("readonly") is None


def test_only_ssh_is_forwarded_and_only_from_loopback() -> None:
    root = render()
    args = qemu_args(root)
    assert args[0::2] == ["-netdev", "-device"]
    netdev = args[1].split(",")
    assert netdev[0] == "user"
    assert [p for p in netdev if p.startswith("hostfwd=")] == ["hostfwd=tcp:127.0.0.1:41022-:22"]
    assert not any(p.startswith("guestfwd=") for p in netdev)
    # libvirt would add a second, unforwarded NIC of its own.
    assert root.find("devices/interface") is None


def test_the_nic_has_a_fixed_pci_slot_on_the_root_bus() -> None:
    # Without an address QEMU's pick collides with libvirt's root ports on q35.
    device = qemu_args(render())[3]
    assert device.startswith("virtio-net-pci,netdev=pydnet,")
    assert "bus=pcie.0" in device.split(",")
    assert "addr=0x1c" in device.split(",")


def test_serial_console_goes_to_the_instances_log_file() -> None:
    spec = make_spec()
    serial = render(spec).find("devices/serial")
    assert serial is not None
    assert serial.get("type") == "file"
    source = serial.find("source")
    assert source is not None
    assert source.get("path") == str(spec.serial_log)


def test_no_display_usb_or_balloon_and_a_virtio_rng() -> None:
    devices = render().find("devices")
    assert devices is not None
    assert devices.find("graphics") is None
    assert devices.find("video") is None
    controller = devices.find("controller[@type='usb']")
    assert controller is not None
    assert controller.get("model") == "none"
    balloon = devices.find("memballoon")
    assert balloon is not None
    assert balloon.get("model") == "none"
    rng = devices.find("rng")
    assert rng is not None
    assert rng.get("model") == "virtio"


def test_lifecycle_events_end_the_domain_except_reboot() -> None:
    root = render()
    assert text(root, "on_poweroff") == "destroy"
    assert text(root, "on_reboot") == "restart"
    assert text(root, "on_crash") == "destroy"


def test_paths_with_xml_metacharacters_survive_intact() -> None:
    odd = Path('/home/a&b/<pyd>/it\'s "here"')
    spec = make_spec(root=odd)
    xml = domain_xml("pyd-dev", spec, instance="dev", firmware=odd / "qboot.rom")
    assert "a&amp;b/&lt;pyd&gt;" in xml
    root = ET.fromstring(xml)
    assert text(root, "os/kernel") == str(odd / "vmlinux")
    assert text(root, "os/loader") == str(odd / "qboot.rom")
    source = root.find("devices/disk/source")
    assert source is not None
    assert source.get("file") == str(odd / "os.qcow2")


def test_qemu_runs_unprivileged_unless_root_asks_otherwise() -> None:
    assert render(run_as_root=False).find("seclabel") is None
    seclabel = render(run_as_root=True).find("seclabel")
    assert seclabel is not None
    assert (seclabel.get("type"), seclabel.get("model"), seclabel.get("relabel")) == (
        "static",
        "dac",
        "no",
    )
    assert text(seclabel, "label") == "+0:+0"


def test_the_domain_names_its_pyd_instance() -> None:
    xml = domain_xml("pyd-dev", make_spec(), instance="dev", firmware=QBOOT)
    assert text(ET.fromstring(xml), "name") == "pyd-dev"
    assert ET.fromstring(xml).find(f"metadata/{{{PYD_NS}}}instance") is not None
    assert instance_of(xml) == "dev"
    assert instance_of("<domain type='kvm'><name>pyd-dev</name></domain>") is None
    assert instance_of("not xml") is None


def test_a_redefinition_keeps_the_domains_uuid() -> None:
    known = str(uuid.uuid4())
    assert text(render(uuid=known), "uuid") == known
    assert render().find("uuid") is None


def test_rendering_is_deterministic() -> None:
    spec = make_spec()
    first = domain_xml("pyd-dev", spec, instance="dev", firmware=QBOOT, run_as_root=True)
    again = domain_xml("pyd-dev", spec, instance="dev", firmware=QBOOT, run_as_root=True)
    assert first == again


# -- the URI and the messages ------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "env", "euid", "expected"),
    [
        (
            "qemu+ssh://host/system",
            {"LIBVIRT_DEFAULT_URI": "qemu:///session"},
            0,
            "qemu+ssh://host/system",
        ),
        ("", {"LIBVIRT_DEFAULT_URI": "qemu:///session"}, 0, "qemu:///session"),
        ("", {"LIBVIRT_DEFAULT_URI": ""}, 0, "qemu:///system"),
        ("", {}, 0, "qemu:///system"),
        ("", {}, 1000, "qemu:///session"),
    ],
)
def test_choose_uri(configured: str, env: dict[str, str], euid: int, expected: str) -> None:
    assert choose_uri(configured, env, euid) == expected


def test_only_root_on_the_system_daemon_keeps_qemu_as_root() -> None:
    assert runs_as_root("qemu:///system", 0)
    assert not runs_as_root("qemu:///system", 1000)
    assert not runs_as_root("qemu:///session", 0)


def test_connect_hints_name_the_exact_command_for_the_platform() -> None:
    assert "virtlogd -d && libvirtd -d" in connect_hint("Linux", has_systemd=False)
    assert "sudo systemctl start libvirtd" in connect_hint("Linux", has_systemd=True)
    assert "brew services start libvirt" in connect_hint("Darwin", has_systemd=False)
    assert "usermod -aG libvirt" in connect_hint("Linux", has_systemd=True, denied=True)
    for hint in (connect_hint("Linux", False), connect_hint("Darwin", False)):
        assert "pyd config set backend qemu" in hint


def test_an_unreachable_daemon_is_an_environment_problem_with_the_fix() -> None:
    backend = LibvirtBackend("nowhere", "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(EnvironmentProblem, match="cannot connect to libvirt") as info:
        backend.state()
    assert "pyd config set backend qemu" in info.value.hint


# -- libvirt itself: the test driver parses and validates against its schema ---------------


@pytest.fixture
def test_conn() -> Iterator[libvirt.virConnect]:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(TEST_URI)
    yield conn
    conn.close()


@pytest.mark.parametrize(("accel", "run_as_root"), [("tcg", True), ("tcg", False), ("kvm", False)])
def test_libvirt_validates_defines_and_runs_the_domain(
    test_conn: libvirt.virConnect, accel: str, run_as_root: bool
) -> None:
    name = f"pyd-unit-{uuid.uuid4().hex[:8]}"
    xml = domain_xml(
        name, make_spec(accel=accel), instance="unit", firmware=QBOOT, run_as_root=run_as_root
    )
    dom = test_conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        dom.create()
        assert dom.isActive()
        # What libvirt kept is what pyd asked for.
        kept = dom.XMLDesc(0)
        assert instance_of(kept) == "unit"
        root = ET.fromstring(kept)
        assert (root.get("type"), text(root, "os/loader")) == (
            "qemu" if accel == "tcg" else accel,
            str(QBOOT),
        )
        assert [text(d, "serial") for d in root.findall("devices/disk")] == [
            "pyd-os",
            DATA_SERIAL,
            "pyd-seed",
        ]
        dom.destroy()
        assert not dom.isActive()
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()


def test_the_schema_check_rejects_what_libvirt_does_not_know(test_conn: libvirt.virConnect) -> None:
    # Proves the validation above can fail: one misspelt element is refused.
    xml = domain_xml("pyd-unit-bad", make_spec(), instance="unit", firmware=QBOOT)
    bad = xml.replace("<memballoon", "<memoryballoon")
    with pytest.raises(libvirt.libvirtError, match=r"(?i)schema|relax|valid"):
        test_conn.defineXMLFlags(bad, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


def test_backend_lifecycle_on_the_test_driver() -> None:
    instance = f"unit-{uuid.uuid4().hex[:8]}"
    backend = LibvirtBackend(instance, TEST_URI)
    # The test driver runs nothing, so no firmware lookup is needed.
    spec = make_spec(arch=dataclasses.replace(get_arch("x86_64"), firmware=""))
    try:
        assert backend.state() is VMState.ABSENT
        backend.start(spec)
        assert backend.state() is VMState.RUNNING
        with pytest.raises(PydError, match="already running"):
            backend.start(spec)
        with pytest.raises(PydError, match="stop it before deleting"):
            backend.delete()
        backend.shutdown(timeout=10)
        assert backend.state() is VMState.STOPPED
        # A second start redefines the same domain with the changed settings.
        backend.start(dataclasses.replace(spec, cpus=3))
        assert backend.state() is VMState.RUNNING
        backend.kill()
        assert backend.state() is VMState.STOPPED
        backend.kill()  # no-op when stopped
        backend.delete()
        assert backend.state() is VMState.ABSENT
        backend.delete()  # no-op when absent
    finally:
        backend.kill()
        backend.delete()
        backend.close()


def test_backend_leaves_a_same_named_foreign_domain_alone(test_conn: libvirt.virConnect) -> None:
    instance = f"unit-{uuid.uuid4().hex[:8]}"
    foreign = test_conn.defineXML(
        f"<domain type='test'><name>pyd-{instance}</name><memory>65536</memory>"
        "<os><type>hvm</type></os></domain>"
    )
    backend = LibvirtBackend(instance, TEST_URI)
    spec = make_spec(arch=dataclasses.replace(get_arch("x86_64"), firmware=""))
    try:
        with pytest.raises(PydError, match="not made by pyd"):
            backend.start(spec)
        with pytest.raises(PydError, match="not made by pyd"):
            backend.delete()
        assert instance_of(foreign.XMLDesc(0)) is None
    finally:
        backend.close()
        foreign.undefine()


# -- the arm64 guest --------------------------------------------------------------------------


def arm_spec(accel: str = "tcg") -> GuestSpec:
    machine = machine_settings(accel, "aarch64")
    root = Path("/var/pyd/inst")
    return make_spec(
        accel=accel,
        arch=get_arch("aarch64"),
        accel_cpu=machine.cpu,
        cmdline_extra=machine.cmdline,
        gic=machine.gic,
        kernel=root / "vmlinuz",
    )


@pytest.mark.parametrize(
    ("accel", "domain", "mode", "gic"),
    [
        ("tcg", "qemu", "maximum", "3"),
        ("kvm", "kvm", "host-passthrough", "host"),
        ("hvf", "hvf", "host-passthrough", "3"),
    ],
)
def test_arm64_is_a_virt_domain_booting_its_kernel_without_firmware(
    accel: str, domain: str, mode: str, gic: str
) -> None:
    spec = arm_spec(accel)
    root = render(spec, firmware=None)
    assert root.get("type") == domain
    type_el = root.find("os/type")
    assert type_el is not None
    assert (type_el.get("arch"), type_el.get("machine"), type_el.text) == (
        "aarch64",
        "virt",
        "hvm",
    )
    assert root.find("os/loader") is None
    assert text(root, "os/kernel") == "/var/pyd/inst/vmlinuz"
    assert text(root, "os/initrd") == str(spec.initrd)
    assert text(root, "os/cmdline") == kernel_cmdline(spec)
    assert text(root, "os/cmdline").startswith("console=ttyAMA0 ")
    gic_el = root.find("features/gic")
    assert gic_el is not None and gic_el.get("version") == gic
    assert root.find("features/acpi") is None  # the device tree describes the machine
    cpu = root.find("cpu")
    assert cpu is not None and cpu.get("mode") == mode
    # The NIC on virt's PCIe root bus, as on q35.
    assert "virtio-net-pci,netdev=pydnet,bus=pcie.0,addr=0x1c" in qemu_args(root)


def test_arm64_under_tcg_passes_the_cpu_properties_libvirt_cannot_say() -> None:
    args = qemu_args(render(arm_spec("tcg"), firmware=None))
    # Last on QEMU's command line, after libvirt's own -cpu max: QEMU keeps the last.
    assert args[-2:] == ["-cpu", "max,pauth-impdef=on"]
    assert "-cpu" not in qemu_args(render(arm_spec("hvf"), firmware=None))
    assert "-cpu" not in qemu_args(render())  # x86: nothing to add


def test_libvirt_validates_the_arm64_domain(test_conn: libvirt.virConnect) -> None:
    name = f"pyd-unit-{uuid.uuid4().hex[:8]}"
    xml = domain_xml(name, arm_spec(), instance="unit", firmware=None)
    dom = test_conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        root = ET.fromstring(dom.XMLDesc(0))
        gic = root.find("features/gic")
        assert gic is not None and gic.get("version") == "3"
        assert text(root, "os/kernel") == "/var/pyd/inst/vmlinuz"
    finally:
        dom.undefine()
