<#
.SYNOPSIS
  Installs pyd on Windows: Python, QEMU (both through winget) and pyd (through pipx).

.DESCRIPTION
  Each step checks first and installs only what is missing, so running it again is harmless.
  -EnableWHPX also turns on the Windows Hypervisor Platform (needs an administrator shell and
  a restart), without which QEMU runs guests under software emulation, several times slower.

.PARAMETER EnableWHPX
  Turn on the Windows feature HypervisorPlatform (WHPX).

.PARAMETER Package
  What pipx installs: "pyd" (the default), or the path of a wheel built by
  packaging/build-release.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File install.ps1 -EnableWHPX
#>
[CmdletBinding()]
param(
    [switch]$EnableWHPX,
    [string]$Package = "pyd"
)
$ErrorActionPreference = "Stop"

# winget ids; QEMU's is also pyd's own hint (vmconfig/qemu.toml, [win32] install).
$PythonId = "Python.Python.3.12"
$QemuId = "SoftwareFreedomConservancy.QEMU"
$QemuExe = Join-Path $env:ProgramFiles "qemu\qemu-system-x86_64.exe"

function Write-Step([string]$Text) { Write-Host "==> $Text" -ForegroundColor Cyan }

function Update-SessionPath {
    # winget and pipx change PATH for new shells only; this shell reads it again.
    $machine = [Environment]::GetEnvironmentVariable("Path", "Machine")
    $user = [Environment]::GetEnvironmentVariable("Path", "User")
    $env:Path = "$machine;$user"
}

function Install-WithWinget([string]$Id) {
    if (-not (Get-Command winget -ErrorAction SilentlyContinue)) {
        throw "winget is missing: install 'App Installer' from the Microsoft Store, then run this again"
    }
    winget install --exact --id $Id --accept-package-agreements --accept-source-agreements
    if ($LASTEXITCODE -ne 0) { throw "winget install $Id failed (exit $LASTEXITCODE)" }
    Update-SessionPath
}

function Test-Command([string]$Exe, [string[]]$Arguments) {
    # Whether `Exe Arguments` runs and exits 0 (a probe: its output is not wanted).
    if (-not (Get-Command $Exe -ErrorAction SilentlyContinue)) { return $false }
    try {
        & $Exe @Arguments *> $null
        return $LASTEXITCODE -eq 0
    } catch {
        return $false
    }
}

function Find-Python {
    # The py launcher first: `python` may be the Microsoft Store's stand-in, which runs nothing.
    foreach ($exe in @("py", "python")) {
        if (Test-Command $exe @("-c", "import sys; sys.exit(sys.version_info < (3, 11))")) {
            return $exe
        }
    }
    return $null
}

# 1. Python 3.11 or newer
Write-Step "Python 3.11 or newer"
$python = Find-Python
if ($null -eq $python) {
    Install-WithWinget $PythonId
    $python = Find-Python
    if ($null -eq $python) {
        throw "Python is still not found after installing ${PythonId}: open a new terminal and run this again"
    }
}
Write-Host "    $(& $python --version)"

# 2. QEMU
Write-Step "QEMU"
if ((Get-Command qemu-system-x86_64 -ErrorAction SilentlyContinue) -or (Test-Path $QemuExe)) {
    Write-Host "    found"
} else {
    Install-WithWinget $QemuId
}

# 3. pipx, then pyd
Write-Step "pipx"
if (-not (Test-Command $python @("-m", "pipx", "--version"))) {
    & $python -m pip install --user --upgrade pipx
    if ($LASTEXITCODE -ne 0) { throw "pip install pipx failed (exit $LASTEXITCODE)" }
}
& $python -m pipx ensurepath
Update-SessionPath

Write-Step "pyd ($Package)"
& $python -m pipx install --force $Package
if ($LASTEXITCODE -ne 0) { throw "pipx install $Package failed (exit $LASTEXITCODE)" }

# 4. Windows Hypervisor Platform, when asked
$restart = $false
if ($EnableWHPX) {
    Write-Step "Windows Hypervisor Platform (HypervisorPlatform)"
    $admin = ([Security.Principal.WindowsPrincipal][Security.Principal.WindowsIdentity]::GetCurrent()).IsInRole(
        [Security.Principal.WindowsBuiltInRole]::Administrator)
    if (-not $admin) {
        throw "turning on HypervisorPlatform needs an administrator shell: run this again as administrator with -EnableWHPX"
    }
    $feature = Get-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform
    if ($feature.State -eq "Enabled") {
        Write-Host "    already enabled"
    } else {
        $result = Enable-WindowsOptionalFeature -Online -FeatureName HypervisorPlatform -All -NoRestart
        $restart = [bool]$result.RestartNeeded
    }
}

# 5. What to run next
Write-Step "Done"
if ($restart) {
    Write-Host "Restart Windows to finish turning on the Hypervisor Platform, then run:"
} else {
    Write-Host "Open a new terminal (PATH changed), then run:"
}
Write-Host "    pyd doctor"
Write-Host "    pyd start"
