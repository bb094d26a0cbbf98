"""`pyd version [--json]`: pyd's version, and for bug reports the versions around it: the
cached guest images, QEMU, libvirt and the platform.

The report is a plain value (VersionReport); rendering it is pure and tested. gather() is
the edge: it reads the image cache's manifests, runs `qemu-system-* --version` once and asks
libvirt's binding for its library version. Nothing it fails to find is an error: a
missing piece is None (JSON null), since the report is most wanted on a broken host.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import typer

from pyd import __version__
from pyd.cli.render import out_console


@dataclass(frozen=True)
class ImageVersions:
    """One cached image, as its manifest.json describes it."""

    key: str
    arch: str
    version: str
    suite: str
    source: str
    created: str
    versions: dict[str, str]  # e.g. {"docker": "26.1.5+dfsg1", "kernel": "6.1.0-…"}
    current: bool  # built from this pyd's recipe: the image `pyd start` would use


@dataclass(frozen=True)
class VersionReport:
    pyd: str
    python: str
    system: str  # sys.platform's: linux, darwin, win32
    machine: str  # the host CPU, e.g. x86_64, arm64, AMD64
    qemu: str | None  # None: no QEMU found, or it does not run
    qemu_program: str
    libvirt: str | None  # the libvirt library's version; None without libvirt-python
    images: tuple[ImageVersions, ...]


def libvirt_version_text(number: int) -> str:
    """libvirt's packed version number (major * 1,000,000 + minor * 1,000 + micro) as text."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


def report_json(report: VersionReport) -> str:
    """The report as JSON: one object, keys in a fixed order."""
    data: dict[str, Any] = asdict(report)
    data["images"] = [asdict(i) for i in report.images]
    return json.dumps(data, indent=2)


def plain_line(version: str) -> str:
    """Plain `pyd version`'s one line (unchanged since the first release: scripts read it)."""
    return f"pyd {version}"


# -- the edge ------------------------------------------------------------------------------


def gather() -> VersionReport:
    """What this host has, read without changing anything."""
    from pyd.config.arches import get_arch, host_arch

    program = get_arch(host_arch()).qemu
    return VersionReport(
        pyd=__version__,
        python=platform.python_version(),
        system=sys.platform,
        machine=platform.machine(),
        qemu=_qemu_version(program),
        qemu_program=program,
        libvirt=_libvirt_version(),
        images=_images(),
    )


def _qemu_version(program: str) -> str | None:
    from pyd.config.qemu_install import locate_qemu
    from pyd.errors import PydError
    from pyd.vm.qemu_binary import format_version, qemu_version

    path = locate_qemu(program)
    if path is None:
        return None
    try:
        return format_version(qemu_version(path))
    except PydError:
        return None


def _libvirt_version() -> str | None:
    try:
        import libvirt
    except ImportError:  # Windows, or a host without the binding
        return None
    try:
        return libvirt_version_text(int(libvirt.getVersion()))
    except libvirt.libvirtError:
        return None


def _images() -> tuple[ImageVersions, ...]:
    from pyd.config.arches import get_arch
    from pyd.errors import PydError
    from pyd.host.paths import images_dir
    from pyd.image.build import build_params
    from pyd.image.cache import ImageCache, image_key
    from pyd.image.recipe import default_suite, read_recipe, recipe_dir, recipe_hash

    try:
        entries = ImageCache(images_dir()).entries()
    except (OSError, PydError):
        return ()
    try:
        recipe = read_recipe(recipe_dir())
        suite = default_suite()
    except (OSError, PydError):
        recipe, suite = [], ""
    found = []
    for e in entries:
        m = e.manifest
        current = False
        if recipe:
            try:
                arch = get_arch(m.arch)
                current = e.key == image_key(m.arch, recipe_hash(recipe, build_params(arch, suite)))
            except PydError:  # an arch this pyd does not know
                current = False
        found.append(
            ImageVersions(
                key=e.key,
                arch=m.arch,
                version=m.version,
                suite=m.suite,
                source=m.source,
                created=m.created,
                versions=dict(m.versions),
                current=current,
            )
        )
    return tuple(found)


def version(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="also the images', QEMU's and libvirt's versions, as JSON"),
    ] = False,
) -> None:
    """Print pyd's version (--json: with the versions a bug report needs)."""
    if as_json:
        out_console.print_json(report_json(gather()))
        return
    out_console.print(plain_line(__version__))
