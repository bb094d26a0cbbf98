"""What an image build of another architecture does about binfmt_misc: the pure decision,
reading the state from stand-in /proc and binfmt.d directories, and the no-op when native."""

from pathlib import Path

import pytest

from pyd.config.arches import get_arch
from pyd.image.binfmt import (
    BinfmtState,
    ForeignExecMissing,
    Step,
    binfmt_steps,
    ensure_foreign_exec,
    read_state,
    register_rule,
)

RULE = ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46:\\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:F"
ENABLED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n"


def state(**kw: object) -> BinfmtState:
    base: dict[str, object] = {
        "arch": "aarch64",
        "mounted": True,
        "entry": ENABLED,
        "rule": RULE,
        "root": True,
    }
    return BinfmtState(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "steps"),
    [
        ({}, []),
        ({"mounted": False, "entry": None}, [Step.MOUNT, Step.REGISTER]),
        ({"entry": None}, [Step.REGISTER]),
        ({"entry": "disabled\ninterpreter /x\n"}, [Step.ENABLE]),
        # Nothing to do needs neither root nor the package.
        ({"root": False, "rule": None}, []),
    ],
)
def test_steps(kw: dict[str, object], steps: list[Step]) -> None:
    assert binfmt_steps(state(**kw)) == steps


def test_registering_without_qemu_user_static_says_what_to_install() -> None:
    with pytest.raises(ForeignExecMissing, match="user-mode emulator") as e:
        binfmt_steps(state(entry=None, rule=None))
    assert "apt-get install qemu-user-static arch-test" in e.value.hint
    assert e.value.exit_code == 2


def test_a_needed_step_without_root_asks_for_sudo() -> None:
    with pytest.raises(ForeignExecMissing, match="mount binfmt_misc, register") as e:
        binfmt_steps(state(mounted=False, entry=None, root=False))
    assert "sudo" in e.value.hint


def test_rule_comes_from_etc_before_the_package(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "qemu-aarch64.conf").write_text(f"# from the package\n{RULE}\n")
    assert register_rule("aarch64", (etc, lib)) == RULE
    (etc / "qemu-aarch64.conf").write_text(":qemu-aarch64:M::local\n")
    assert register_rule("aarch64", (etc, lib)) == ":qemu-aarch64:M::local"
    assert register_rule("x86_64", (etc, lib)) is None


def test_read_state(tmp_path: Path) -> None:
    assert read_state("aarch64", True, tmp_path).mounted is False
    (tmp_path / "register").write_text("")
    s = read_state("aarch64", True, tmp_path)
    assert s.mounted and s.entry is None
    (tmp_path / "qemu-aarch64").write_text(ENABLED)
    assert read_state("aarch64", True, tmp_path).entry == ENABLED


def test_native_builds_touch_nothing() -> None:
    said: list[str] = []
    # Not root and no arch-test needed: a native build never looks at binfmt_misc.
    ensure_foreign_exec(get_arch("aarch64"), "aarch64", False, said.append)
    ensure_foreign_exec(get_arch("x86_64"), "x86_64", False, said.append)
    assert said == []


def test_a_foreign_build_without_arch_test_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pyd.image.binfmt.shutil.which", lambda name: None)
    with pytest.raises(ForeignExecMissing, match="needs arch-test") as e:
        ensure_foreign_exec(get_arch("aarch64"), "x86_64", True, lambda line: None)
    assert e.value.exit_code == 2 and "qemu-user-static" in e.value.hint
