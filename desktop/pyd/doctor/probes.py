"""What `pyd doctor` looks at on this host, gathered into checks.Facts: the only side effects
of the doctor. The slow probes (QEMU's --version, libvirt's connection, the accelerator)
run in parallel, so the doctor answers in well under a second when all is fine."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyd.config.arches import get_arch, host_arch, under_rosetta
from pyd.config.machine import host_system
from pyd.config.qemu_install import QEMU_IMG, locate_qemu
from pyd.config.settings import context_name, parse_config
from pyd.config.store import load_config, platform_defaults
from pyd.dockercli.context import META_FILE, config_dir, meta_dir_name
from pyd.doctor.checks import DiskSpace, Facts
from pyd.errors import PydError
from pyd.host.env import this_host
from pyd.host.paths import images_dir, instances_dir
from pyd.host.programs import find_ssh
from pyd.instance.registry import instance
from pyd.instance.state import instance_arch, load_state
from pyd.mounts.sftp_host import OPENSSH, default_server, system_server
from pyd.vm.accel import probe_accelerator
from pyd.vm.backends.choice import libvirt_answers, libvirt_uri
from pyd.vm.qemu_binary import Version, qemu_version


def gather(name: str) -> Facts:
    """The facts for instance `name` (which need not exist: then its settings are the
    defaults and its arch the host's). Reads; never creates or changes anything."""
    system = host_system()
    inst = instance(name)
    config_error = config_fix = ""
    try:
        cfg = load_config(inst.files.config)
    except PydError as e:  # checked as the defaults, and reported as a failing check
        config_error = e.message
        config_fix = f"edit {inst.files.config}" + (f" ({e.hint})" if e.hint else "")
        host = this_host()
        cfg = parse_config({}, "defaults", platform_defaults(host), host)
    try:
        state = load_state(inst.files.state)
    except PydError:
        state = None  # a damaged state.json is `pyd start`'s to report, with its fix
    guest = (state.arch if state else instance_arch(inst.files)) or host_arch()
    program = get_arch(guest).qemu
    uri = libvirt_uri(cfg)
    probe_libvirt = system == "linux" or cfg.backend == "libvirt"
    with ThreadPoolExecutor(max_workers=3) as pool:
        qemu = pool.submit(_qemu, program, system)
        accel = pool.submit(probe_accelerator, guest)
        libvirt = pool.submit(libvirt_answers, uri) if probe_libvirt and uri else None
        qemu_path, version, qemu_error = qemu.result()
        answers, why_not = libvirt.result() if libvirt else (False, "")
        if not uri:
            why_not = "libvirt's Python binding (libvirt-python) is not installed"
        accel_probe = accel.result()
    context = context_name(name)
    return Facts(
        system=system,
        host_arch=host_arch(),
        guest_arch=guest,
        qemu_program=program,
        qemu_path=qemu_path,
        qemu_version=version,
        qemu_error=qemu_error,
        qemu_img_path=_found(locate_qemu(QEMU_IMG, system)),
        accel_setting=cfg.accel,
        accel=accel_probe,
        backend_setting=cfg.backend,
        recorded_backend=state.backend if state else None,
        libvirt_uri=uri,
        libvirt_answers=answers,
        libvirt_why_not=why_not,
        has_systemd=Path("/run/systemd/system").is_dir(),
        ssh_path=find_ssh(system),
        sftp_server=system_server(sys.platform),
        sftp_wanted=default_server(sys.platform) == OPENSSH
        and os.environ.get("PYD_SFTP_SERVER", "") in ("", OPENSSH),
        docker_cli=shutil.which("docker"),
        instance=name,
        context=context,
        context_exists=(
            config_dir() / "contexts/meta" / meta_dir_name(context) / META_FILE
        ).is_file(),
        instance_ran=inst.files.state.exists(),
        disks=(
            free_space("image cache", images_dir()),
            free_space("instances", instances_dir()),
        ),
        loopback_error=_loopback_error(),
        config_error=config_error,
        config_fix=config_fix,
        rosetta=under_rosetta(),
    )


def _qemu(program: str, system: str) -> tuple[str | None, Version | None, str]:
    path = locate_qemu(program, system)
    if path is None:
        return None, None, ""
    try:
        return str(path), qemu_version(path), ""
    except PydError as e:
        return str(path), None, e.message


def _found(path: Path | None) -> str | None:
    return None if path is None else str(path)


def free_space(label: str, path: Path) -> DiskSpace:
    """Free bytes on the disk that holds (or will hold) `path`: its nearest existing
    ancestor's, as a first start creates the directory there."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return DiskSpace(label, str(path), shutil.disk_usage(probe).free)
    except OSError as e:
        return DiskSpace(label, str(path), None, e.strerror or str(e))


def _loopback_error() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
    except OSError as e:
        return e.strerror or str(e)
    return ""
