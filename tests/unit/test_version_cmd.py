"""`pyd version [--json]`: the plain line scripts read, and the report a bug report needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pyd.cli.version_cmd import (
    ImageVersions,
    VersionReport,
    libvirt_version_text,
    plain_line,
    report_json,
)


def _pyd(*args: str, cache: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYD_CACHE_DIR": str(cache), "PATH": path, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "pyd", *args], capture_output=True, text=True, env=env, check=False
    )


def _stand_in_image(cache: Path) -> None:
    """One image in the cache at `cache`, built by a recipe that writes stand-in files."""
    from pyd.config.arches import get_arch
    from pyd.image.build import build_image
    from pyd.image.cache import ImageCache

    recipe = cache.parent / "recipe"
    recipe.mkdir()
    (recipe / "build").write_text(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do case $1 in --out) o=$2; shift 2;; *) shift;; esac;"
        " done\nfor f in vmlinuz initrd.img rootfs.qcow2; do echo $f > $o/$f; done\n"
        'echo \'{"docker": "26.1.5", "kernel": "6.12.1"}\' > $o/versions.json\n'
    )
    (recipe / "build").chmod(0o755)
    build_image(ImageCache(cache / "images"), get_arch("x86_64"), "trixie", recipe, print)


def test_libvirt_version_number_reads_as_major_minor_micro() -> None:
    assert libvirt_version_text(9_000_000) == "9.0.0"
    assert libvirt_version_text(10_002_013) == "10.2.13"


def test_report_json_says_null_for_what_is_absent() -> None:
    image = ImageVersions(
        "x86_64-0123456789abcdef", "x86_64", "trixie-0123", "trixie", "built", "2026-12-04",
        {"docker": "26.1.5"}, True,
    )  # fmt: skip
    report = VersionReport("0.1.0", "3.11.7", "win32", "AMD64", None, "qemu-system-x86_64",
                           None, (image,))  # fmt: skip
    data = json.loads(report_json(report))
    assert data["pyd"] == "0.1.0" and data["system"] == "win32"
    assert data["qemu"] is None and data["libvirt"] is None
    assert data["images"] == [
        {
            "key": "x86_64-0123456789abcdef",
            "arch": "x86_64",
            "version": "trixie-0123",
            "suite": "trixie",
            "source": "built",
            "created": "2026-12-04",
            "versions": {"docker": "26.1.5"},
            "current": True,
        }
    ]


def test_plain_version_is_one_line_as_before(tmp_path: Path) -> None:
    from pyd import __version__

    r = _pyd("version", cache=tmp_path, path=os.environ["PATH"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == plain_line(__version__) + "\n" == f"pyd {__version__}\n"


def test_version_json_reports_images_qemu_and_libvirt(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _stand_in_image(cache)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qemu = bin_dir / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 9.1.2 (Debian 1:9.1.2+ds-1)'\n")
    qemu.chmod(0o755)

    r = _pyd("version", "--json", cache=cache, path=str(bin_dir))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["qemu"] == "9.1.2" and data["system"] == sys.platform
    [image] = data["images"]
    assert image["arch"] == "x86_64" and image["versions"]["docker"] == "26.1.5"
    assert image["current"] is False  # a stand-in recipe, not this pyd's
    try:
        import libvirt
    except ImportError:
        assert data["libvirt"] is None
    else:
        assert data["libvirt"] == libvirt_version_text(libvirt.getVersion())


def test_version_json_without_qemu_or_images_still_answers(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    r = _pyd("version", "--json", cache=tmp_path / "nocache", path=str(empty))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["qemu"] is None and data["images"] == []
