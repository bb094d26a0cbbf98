"""Instance settings: defaults, parsing, validation messages and the config file on disk."""

from pathlib import Path
from typing import Any

import pytest

from pyd.config.model import (
    InstanceConfig,
    context_name,
    parse_config,
    parse_size,
    to_toml_dict,
    validate,
    validate_name,
    with_value,
)
from pyd.config.store import load_config, save_config
from pyd.errors import PydError, UsageError
from pyd.resources import vmconfig

DEFAULTS = vmconfig("defaults")
SHIPPED = InstanceConfig(
    cpus=2, memory_mib=2048, disk_gib=20, accel="auto", backend="libvirt", libvirt_uri=""
)


def _usage_error(data: dict[str, Any]) -> UsageError:
    with pytest.raises(UsageError) as e:
        parse_config(data, "/home/u/pyd/default/config.toml", DEFAULTS)
    assert e.value.exit_code == 2
    return e.value


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "dev", "build-2", "0", "a" * 31])
def test_valid_instance_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "Dev", "-dev", "a_b", "a.b", "a/b", "a" * 32, "dév"])
def test_invalid_instance_names_are_usage_errors_with_a_hint(name: str) -> None:
    with pytest.raises(UsageError) as e:
        validate_name(name)
    assert e.value.exit_code == 2
    assert repr(name) in e.value.message
    assert "lowercase letters, digits and '-'" in e.value.hint


def test_context_name_is_pyd_for_default_and_pyd_name_otherwise() -> None:
    assert context_name("default") == "pyd"
    assert context_name("dev") == "pyd-dev"
    with pytest.raises(UsageError):
        context_name("Not-Valid")


# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "mib"),
    [
        ("2GiB", "MiB", 2048),
        ("2G", "MiB", 2048),
        ("2g", "MiB", 2048),
        ("2 GiB", "MiB", 2048),
        ("512MiB", "MiB", 512),
        ("512M", "MiB", 512),
        ("1TiB", "MiB", 1024 * 1024),
        ("2048", "MiB", 2048),  # a bare number is in the default unit: MiB for memory
        ("20", "GiB", 20 * 1024),  # ... and GiB for disk
        (2048, "MiB", 2048),  # TOML integers too
        (20, "GiB", 20 * 1024),
    ],
)
def test_parse_size(text: str | int, unit: str, mib: int) -> None:
    assert parse_size(text, unit) == mib


@pytest.mark.parametrize("text", ["", "two", "2.5GiB", "-1G", "2KiB", "2 G B", "G"])
def test_bad_sizes_name_the_key_and_give_an_example(text: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_size(text, "MiB", key="memory")
    assert e.value.exit_code == 2
    assert e.value.message.startswith("memory: ")
    assert "e.g. 2GiB" in e.value.hint


def test_decimal_units_are_refused_not_guessed() -> None:
    with pytest.raises(UsageError) as e:
        parse_size("2GB", "MiB", key="memory")
    assert "ambiguous" in e.value.message and e.value.hint.endswith("write 2GiB")


def test_booleans_and_negative_numbers_are_not_sizes() -> None:
    for value in (True, -5):
        with pytest.raises(UsageError, match="memory"):
            parse_size(value, "MiB", key="memory")


# --- parsing and validation -----------------------------------------------------------------


def test_the_shipped_defaults_parse() -> None:
    assert parse_config({}, "defaults", DEFAULTS) == SHIPPED


def test_file_values_override_defaults_and_the_rest_stay() -> None:
    cfg = parse_config({"cpus": 4, "memory": "6G", "disk": 60}, "f.toml", DEFAULTS)
    assert cfg == InstanceConfig(4, 6144, 60, "auto", "libvirt", "")


def test_unknown_keys_are_listed_with_the_known_ones() -> None:
    e = _usage_error({"memroy": "4GiB"})
    assert "unknown setting 'memroy'" in e.message
    assert "/home/u/pyd/default/config.toml" in e.message
    assert e.hint == "known settings: cpus, memory, disk, accel, backend, libvirt_uri"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"cpus": "4"}, "cpus: expected a whole number, got a string '4'"),
        ({"cpus": 2.5}, "cpus: expected a whole number, got a number 2.5"),
        ({"cpus": True}, "cpus: expected a whole number, got a boolean True"),
        ({"memory": [2]}, "memory: expected a size"),
        ({"accel": 1}, "accel: expected a string, got a number 1"),
        ({"libvirt_uri": False}, "libvirt_uri: expected a string"),
    ],
)
def test_wrong_types_name_the_file_and_the_key(data: dict[str, Any], expected: str) -> None:
    e = _usage_error(data)
    assert e.message.startswith("/home/u/pyd/default/config.toml: ")
    assert expected in e.message


@pytest.mark.parametrize(
    ("data", "expected", "hint"),
    [
        ({"cpus": 0}, "cpus: must be from 1 to 64, got 0", "e.g. 1"),
        ({"cpus": 65}, "cpus: must be from 1 to 64, got 65", "e.g. 64"),
        ({"memory": "128MiB"}, "memory: must be from 256MiB to 1024GiB, got 128MiB", ""),
        ({"memory": "2TiB"}, "memory: must be from 256MiB to 1024GiB, got 2048GiB", ""),
        ({"disk": 0}, "disk: must be from 1GiB to 16384GiB, got 0GiB", "e.g. 1GiB"),
        ({"disk": "20TiB"}, "disk: must be from 1GiB to 16384GiB, got 20480GiB", ""),
        ({"disk": "1536MiB"}, "disk: must be a whole number of GiB, got 1536MiB", "e.g. 2GiB"),
        ({"accel": "KVM"}, "accel: must be one of auto, kvm, hvf, whpx, tcg; got 'KVM'", ""),
        ({"backend": "vbox"}, "backend: must be one of libvirt, qemu; got 'vbox'", ""),
        ({"libvirt_uri": "qemu"}, "libvirt_uri: 'qemu' is not a URI", "qemu:///session"),
    ],
)
def test_out_of_range_values_are_usage_errors(
    data: dict[str, Any], expected: str, hint: str
) -> None:
    e = _usage_error(data)
    assert e.message == f"/home/u/pyd/default/config.toml: {expected}"
    assert hint in e.hint and e.hint  # every error tells the user what to do next


def test_all_problems_are_reported_together() -> None:
    e = _usage_error({"cpus": 0, "accel": "fast", "colour": "red"})
    assert "3 invalid settings" in e.message
    for part in ("'colour'", "cpus: must be", "accel: must be one of"):
        assert part in e.message


def test_libvirt_uri_accepts_empty_and_uris() -> None:
    for uri in ("", "qemu:///system", "qemu+ssh://host/system", "test:///default"):
        assert parse_config({"libvirt_uri": uri}, "f", DEFAULTS).libvirt_uri == uri


def test_validate_checks_configs_built_in_code() -> None:
    assert validate(SHIPPED, "x") is SHIPPED
    with pytest.raises(UsageError, match="cpus: must be from 1 to 64, got 99"):
        validate(InstanceConfig(99, 2048, 20, "auto", "qemu", ""), "--cpus")


# --- pyd config set -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "raw", "field", "value"),
    [
        ("cpus", "4", "cpus", 4),
        ("cpus", " 8 ", "cpus", 8),
        ("memory", "4GiB", "memory_mib", 4096),
        ("memory", "1536", "memory_mib", 1536),
        ("disk", "100", "disk_gib", 100),
        ("disk", "1TiB", "disk_gib", 1024),
        ("accel", "tcg", "accel", "tcg"),
        ("backend", "qemu", "backend", "qemu"),
        ("libvirt_uri", "qemu:///session", "libvirt_uri", "qemu:///session"),
        ("libvirt_uri", "", "libvirt_uri", ""),
    ],
)
def test_with_value_changes_one_setting(key: str, raw: str, field: str, value: object) -> None:
    changed = with_value(SHIPPED, key, raw)
    assert getattr(changed, field) == value
    others = {k: v for k, v in vars(changed).items() if k != field}
    assert others == {k: v for k, v in vars(SHIPPED).items() if k != field}


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("cpu", "4", "unknown setting 'cpu'"),
        ("cpus", "four", "cpus: expected a whole number, got 'four'"),
        ("cpus", "4_0", "cpus: expected a whole number"),
        ("cpus", "0", "cpus: must be from 1 to 64"),
        ("memory", "lots", "memory: 'lots' is not a size"),
        ("memory", "100", "memory: must be from 256MiB"),
        ("accel", "fast", "accel: must be one of"),
    ],
)
def test_with_value_refuses_bad_input(key: str, raw: str, expected: str) -> None:
    with pytest.raises(UsageError) as e:
        with_value(SHIPPED, key, raw)
    assert e.value.exit_code == 2 and expected in e.value.message


def test_to_toml_dict_spells_sizes_with_units() -> None:
    assert to_toml_dict(SHIPPED) == {
        "cpus": 2,
        "memory": "2GiB",
        "disk": "20GiB",
        "accel": "auto",
        "backend": "libvirt",
        "libvirt_uri": "",
    }
    assert to_toml_dict(with_value(SHIPPED, "memory", "1536MiB"))["memory"] == "1536MiB"


def test_to_toml_dict_parses_back_to_the_same_config() -> None:
    cfg = InstanceConfig(3, 1536, 7, "tcg", "qemu", "qemu:///session")
    assert parse_config(to_toml_dict(cfg), "f", DEFAULTS) == cfg


# --- the file -------------------------------------------------------------------------------


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "config.toml") == SHIPPED
    assert not (tmp_path / "config.toml").exists()


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    cfg = InstanceConfig(4, 3072, 64, "kvm", "qemu", "")
    save_config(path, cfg)
    assert load_config(path) == cfg
    assert not [p.name for p in path.parent.iterdir() if p.name != "config.toml"]  # no temp


def test_rewrite_keeps_the_users_comments_order_and_spelling(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "# my laptop: keep it small\n"
        'memory = "3G"  # builds need 3G\n'
        "\n"
        "# pinned for the CI mirror\n"
        'accel = "tcg"\n'
    )
    cfg = with_value(load_config(path), "cpus", "6")
    save_config(path, cfg)
    text = path.read_text()
    assert text.startswith(
        '# my laptop: keep it small\nmemory = "3G"  # builds need 3G\n\n'
        '# pinned for the CI mirror\naccel = "tcg"\n'
    )
    assert "cpus = 6\n" in text
    assert load_config(path) == cfg

    save_config(path, with_value(cfg, "memory", "4GiB"))
    assert 'memory = "4GiB"  # builds need 3G\n' in path.read_text()


def test_save_keeps_the_files_permissions(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("cpus = 2\n")
    path.chmod(0o600)
    save_config(path, with_value(SHIPPED, "cpus", "3"))
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    "content", [b"cpus = \n", b"[[[", b'memory = "2GiB"\nmemory = "4GiB"\n', b"cpus = 2\xff\n"]
)
def test_corrupted_file_fails_and_is_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    for action in (lambda: load_config(path), lambda: save_config(path, SHIPPED)):
        with pytest.raises(PydError) as e:
            action()
        assert type(e.value) is PydError and e.value.exit_code == 1
        assert f"the config file {path} is corrupted" in e.value.message
        assert "fix the TOML" in e.value.hint and "remove the file" in e.value.hint
    assert path.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_wrong_values_in_the_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("cpus = 0\n")
    with pytest.raises(UsageError, match=f"^{path}: cpus: must be from 1 to 64"):
        load_config(path)


def test_windows_defaults_to_running_qemu_directly() -> None:
    from pyd.config.store import platform_defaults

    assert platform_defaults("win32")["backend"] == "qemu"
    assert platform_defaults("linux")["backend"] == "libvirt"
    assert platform_defaults("darwin")["backend"] == "libvirt"
