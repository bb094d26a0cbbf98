"""packaging/windows: the winget manifest (schema 1.6: version, defaultLocale and installer
files) and install.ps1, checked as far as a machine without PowerShell can."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

TOP = Path(__file__).resolve().parents[2]
WINDOWS = TOP / "packaging" / "windows"
WINGET = WINDOWS / "winget"
SCRIPT = WINDOWS / "install.ps1"
# Required keys of each manifest type in schema 1.6.0 (winget-pkgs doc/manifest/schema/1.6.0).
REQUIRED = {
    "Pyd.Pyd.yaml": ("version", {"PackageIdentifier", "PackageVersion", "DefaultLocale"}),
    "Pyd.Pyd.locale.en-US.yaml": (
        "defaultLocale",
        {
            "PackageIdentifier",
            "PackageVersion",
            "PackageLocale",
            "Publisher",
            "PackageName",
            "License",
            "ShortDescription",
        },
    ),
    "Pyd.Pyd.installer.yaml": ("installer", {"PackageIdentifier", "PackageVersion", "Installers"}),
}


def _manifest(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WINGET / name).read_text())
    assert isinstance(data, dict)
    return data


def _pyd_version() -> str:
    with (TOP / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _qemu_winget_id() -> str:
    """The winget id pyd's own hint installs QEMU with (vmconfig/qemu.toml)."""
    with (TOP / "vmconfig" / "qemu.toml").open("rb") as f:
        install = tomllib.load(f)["win32"]["install"]
    m = re.fullmatch(r"winget install (\S+)", install)
    assert m, install
    return m[1]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_manifest_parses_with_its_types_required_keys(name: str) -> None:
    kind, keys = REQUIRED[name]
    data = _manifest(name)
    assert keys <= set(data), f"{name} lacks {sorted(keys - set(data))}"
    assert data["ManifestType"] == kind and data["ManifestVersion"] == "1.6.0"
    assert data["PackageIdentifier"] == "Pyd.Pyd"
    assert data["PackageVersion"] == _pyd_version()
    assert all(v not in (None, "") for v in data.values()), name


def test_installer_puts_pyd_on_path_and_brings_qemu() -> None:
    data = _manifest("Pyd.Pyd.installer.yaml")
    [installer] = data["Installers"]
    assert installer["InstallerUrl"].startswith("https://")
    assert re.fullmatch(r"[0-9A-Fa-f]{64}", installer["InstallerSha256"])
    assert data["InstallerType"] == "zip" and data["NestedInstallerType"] == "portable"
    [exe] = data["NestedInstallerFiles"]
    assert exe["PortableCommandAlias"] == "pyd" and exe["RelativeFilePath"].endswith(".exe")
    deps = [d["PackageIdentifier"] for d in data["Dependencies"]["PackageDependencies"]]
    assert deps == [_qemu_winget_id()]
    assert _manifest("Pyd.Pyd.yaml")["DefaultLocale"] == "en-US"


def test_install_script_takes_each_step_in_order() -> None:
    text = SCRIPT.read_text().split("#>", 1)[1]  # the code, after the comment-based help
    steps = [
        'Write-Step "Python 3.11 or newer"',
        'Write-Step "QEMU"',
        'Write-Step "pipx"',
        "pipx install",
        'Write-Step "Windows Hypervisor Platform',
        'Write-Host "    pyd start"',
    ]
    at = [text.find(s) for s in steps]
    assert -1 not in at, [s for s, i in zip(steps, at, strict=True) if i < 0]
    assert at == sorted(at), "the steps are out of order"
    assert f'$QemuId = "{_qemu_winget_id()}"' in text
    assert re.search(r'\$PythonId = "Python\.Python\.3\.1[1-9]"', text)
    assert "Install-WithWinget $PythonId" in text and "Install-WithWinget $QemuId" in text
    # WHPX only when asked, and as the Windows feature's own name.
    assert re.search(r"\[switch\]\$EnableWHPX", text)
    whpx = text.split("if ($EnableWHPX) {", 1)[1]
    assert "Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform" in whpx


def test_install_script_has_no_powershell_pitfalls() -> None:
    """What pwsh's parser would refuse or misread, checked without pwsh."""
    after_help = SCRIPT.read_text().split("#>", 1)[1]
    body = "\n".join(line for line in after_help.splitlines() if not line.lstrip().startswith("#"))
    for pair in ("{}", "()", "[]"):
        assert body.count(pair[0]) == body.count(pair[1]), f"unbalanced {pair}"
    # "$Name:" in a double-quoted string reads as a scope or drive ($env:X): write "${Name}:".
    for string in re.findall(r'"[^"\n]*"', body):
        bad = re.findall(r"\$(?!env:)[A-Za-z_]\w*:", string)
        assert not bad, f"{string}: write ${{...}} around {bad}"
    assert '$ErrorActionPreference = "Stop"' in body
