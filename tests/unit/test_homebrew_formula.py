"""packaging/homebrew/pyd.rb: valid Ruby, and every Python dependency of the wheel on macOS a
resource, no more (the closure computed from this environment's installed metadata)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOP = Path(__file__).resolve().parents[2]
FORMULA = TOP / "packaging" / "homebrew" / "pyd.rb"
REGENERATE = "regenerate it: packaging/build-release && packaging/homebrew/gen-formula"
RESOURCE = re.compile(
    r'resource "([^"]+)" do\n\s+url "([^"]+)"\n\s+sha256 "([0-9a-f]{64})"\n\s+end'
)


def _gen_formula() -> ModuleType:
    """packaging/homebrew/gen-formula as a module (it has no .py suffix: a command)."""
    path = TOP / "packaging" / "homebrew" / "gen-formula"
    loader = importlib.machinery.SourceFileLoader("gen_formula", str(path))
    spec = importlib.util.spec_from_loader("gen_formula", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_formula"] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


def _resources() -> dict[str, str]:
    """name -> URL of each resource in the formula."""
    return {name: url for name, url, _sha in RESOURCE.findall(FORMULA.read_text())}


def test_formula_is_valid_ruby() -> None:
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is not installed (apt-get install ruby): `ruby -c` cannot run")
    r = subprocess.run([ruby, "-c", str(FORMULA)], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "Syntax OK" in r.stdout, r.stderr


def test_resources_are_the_wheels_dependency_closure_on_macos() -> None:
    gen = _gen_formula()
    found = gen.closure(gen.wheel_requirements(TOP / "pyproject.toml"), gen.installed, gen.MACOS)
    resources = _resources()
    assert found.resolved, "no dependency found: is pyd's environment installed?"
    missing = sorted(set(found.resolved) - set(resources))
    assert not missing, f"pyd.rb lacks {missing}; {REGENERATE}"
    # Beyond what this machine has installed only macOS-only packages (and theirs), which
    # the closure meets as not installed here: pystray's pyobjc, say.
    extra = set(resources) - set(found.resolved)
    assert found.unresolved <= extra, f"pyd.rb lacks {sorted(found.unresolved - extra)}"
    stale = sorted(n for n in extra if gen.installed(n) is not None)
    assert not stale, f"pyd.rb has {stale}, which pyd does not need; {REGENERATE}"
    for name, url in resources.items():
        assert url.startswith("https://files.pythonhosted.org/packages/"), url
        filename = url.rsplit("/", 1)[1]
        assert gen.normalise(filename).startswith(name + "-"), (name, filename)


def test_formula_needs_qemu_tests_itself_and_tells_how_to_start_at_login() -> None:
    text = FORMULA.read_text()
    assert 'depends_on "qemu"' in text
    assert "\n  test do\n" in text and "pyd version" in text
    caveats = text.split("def caveats", 1)[1].split("\n  end\n", 1)[0]
    assert "pyd autostart enable" in caveats


def test_closure_follows_markers_and_extras() -> None:
    gen = _gen_formula()
    metadata = {
        "a": ("1.0", ["b[fast]>=1", 'winonly; sys_platform == "win32"', 'c; extra == "docs"']),
        "b": ("2.0", ['speedup; extra == "fast"', 'slow; extra == "other"']),
        "speedup": ("3.0", []),
        "macdep": ("4.0", []),
    }
    found = gen.closure(
        ["a", 'macdep; sys_platform == "darwin"', "notinstalled"], metadata.get, gen.MACOS
    )
    assert found.resolved == {"a": "1.0", "b": "2.0", "speedup": "3.0", "macdep": "4.0"}
    assert found.unresolved == {"notinstalled"}
