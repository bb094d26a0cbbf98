"""Instance settings: defaults, parsing, validation messages and the config file on disk."""

from pathlib import Path
from typing import Any

import pytest

from pyd.config.settings import (
    InstanceConfig,
    context_name,
    parse_config,
    parse_size,
    to_toml_dict,
    validate_name,
    with_forward_added,
    with_forward_removed,
    with_value,
)
from pyd.config.store import load_config, platform_defaults, save_config
from pyd.errors import PydError, UsageError
from pyd.host.env import Host
from pyd.mounts.shares import Share

HOST = Host("linux", "/home/u")
DEFAULTS = platform_defaults(HOST)
HOME_SHARE = Share("/home/u", "/home/u", writable=True)
SHIPPED = InstanceConfig(
    cpus=2,
    memory_mib=2048,
    disk_gib=20,
    accel="auto",
    backend="auto",
    libvirt_uri="",
    ports_bind="docker",
    port_forwards=(),
    mounts=(HOME_SHARE,),
)


def _usage_error(data: dict[str, Any]) -> UsageError:
    with pytest.raises(UsageError) as e:
        parse_config(data, "/home/u/pyd/default/config.toml", DEFAULTS, HOST)
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
    assert parse_config({}, "defaults", DEFAULTS, HOST) == SHIPPED


def test_file_values_override_defaults_and_the_rest_stay() -> None:
    cfg = parse_config({"cpus": 4, "memory": "6G", "disk": 60}, "f.toml", DEFAULTS, HOST)
    assert cfg == InstanceConfig(4, 6144, 60, "auto", "auto", "", "docker", (), (HOME_SHARE,))


def test_unknown_keys_are_listed_with_the_known_ones() -> None:
    e = _usage_error({"memroy": "4GiB"})
    assert "unknown setting 'memroy'" in e.message
    assert "/home/u/pyd/default/config.toml" in e.message
    assert e.hint == (
        "known settings: cpus, memory, disk, accel, backend, libvirt_uri, stop, ports.bind, "
        "ports.forwards, network.host_access, network.host_dns, image_index, image_keys, "
        "image_source, mounts"
    )


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
        ({"backend": "vbox"}, "backend: must be one of auto, libvirt, qemu; got 'vbox'", ""),
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
        assert parse_config({"libvirt_uri": uri}, "f", DEFAULTS, HOST).libvirt_uri == uri


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
        ("stop", "suspend", "stop", "suspend"),
        ("libvirt_uri", "qemu:///session", "libvirt_uri", "qemu:///session"),
        ("libvirt_uri", "", "libvirt_uri", ""),
        ("ports.bind", "localhost", "ports_bind", "localhost"),
        ("ports.bind", " docker", "ports_bind", "docker"),
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
        ("stop", "hibernate", "stop: must be one of shutdown, suspend; got 'hibernate'"),
        ("ports.bind", "lan", "ports.bind: must be one of docker, localhost; got 'lan'"),
        ("ports", "localhost", "unknown setting 'ports'"),
        ("ports.forwards", "8080:80", "ports.forwards is not set as a whole"),
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
        "backend": "auto",
        "libvirt_uri": "",
        "ports": {"bind": "docker", "forwards": []},
        "network": {"host_access": True, "host_dns": True},
        "mounts": [{"location": "/home/u", "mount_point": "/home/u", "writable": True}],
    }
    assert to_toml_dict(with_value(SHIPPED, "memory", "1536MiB"))["memory"] == "1536MiB"
    assert to_toml_dict(with_value(SHIPPED, "stop", "suspend"))["stop"] == "suspend"


def test_to_toml_dict_parses_back_to_the_same_config() -> None:
    forwards = ("127.0.0.1:8080:80", "[::]:9000:9000")
    shares = (Share("/src", "/src", False), Share("/home/u", "/mnt/u", True))
    cfg = InstanceConfig(
        3, 1536, 7, "tcg", "qemu", "qemu:///session", "localhost", forwards, shares
    )
    assert parse_config(to_toml_dict(cfg), "f", DEFAULTS, HOST) == cfg


# --- [ports] --------------------------------------------------------------------------------


def test_ports_table_sets_the_bind_policy_and_the_forwards_in_one_spelling() -> None:
    cfg = parse_config(
        {"ports": {"bind": "localhost", "forwards": ["8080:80", "[::]:9000:9000/tcp"]}},
        "f",
        DEFAULTS,
        HOST,
    )
    assert cfg.ports_bind == "localhost"
    # "8080:80" is 127.0.0.1:8080:80, written out so that the agent and `pyd port rm` agree
    assert cfg.port_forwards == ("127.0.0.1:8080:80", "[::]:9000:9000")


def test_ports_table_keys_left_out_keep_their_defaults() -> None:
    assert parse_config({"ports": {"bind": "localhost"}}, "f", DEFAULTS, HOST).port_forwards == ()
    assert parse_config({"ports": {"forwards": []}}, "f", DEFAULTS, HOST).ports_bind == "docker"


@pytest.mark.parametrize(
    ("data", "expected", "hint"),
    [
        (
            {"ports": {"bind": "lan"}},
            "ports.bind: must be one of docker, localhost; got 'lan'",
            '"localhost" keeps them on this machine\'s loopback',
        ),
        ({"ports": {"bind": 1}}, "ports.bind: expected a string, got a number 1", ""),
        ({"ports": {"colour": "red"}}, "unknown setting 'ports.colour'", "ports.bind"),
        ({"ports": "localhost"}, "ports: expected a table, got a string 'localhost'", "[ports]"),
        (
            {"ports.bind": "localhost"},
            "the key 'ports.bind' is quoted, so it is not the setting ports.bind",
            "without quotes",
        ),
        (
            {"ports": {"forwards": "8080:80"}},
            'ports.forwards: expected a list of forwards such as ["127.0.0.1:8080:80"], '
            "got a string '8080:80'",
            "pyd port add",
        ),
        (
            {"ports": {"forwards": [8080]}},
            "ports.forwards: expected a list of forwards",
            "pyd port add",
        ),
        (
            {"ports": {"forwards": ["8080"]}},
            "ports.forwards: invalid port forward '8080': both a host port and a guest port",
            "[HOSTIP:]HOSTPORT:GUESTPORT",
        ),
        (
            {"ports": {"forwards": ["53:53/sctp"]}},
            "ports.forwards: invalid port forward '53:53/sctp': SCTP cannot be forwarded",
            "TCP and UDP",
        ),
        (
            {"ports": {"forwards": ["8080:80", "0.0.0.0:8080:81"]}},
            "ports.forwards: '127.0.0.1:8080:80' and '0.0.0.0:8080:81' both need host port 8080",
            "pyd port rm 0.0.0.0:8080:81",
        ),
        (
            {"ports": {"forwards": ["8080:80", "127.0.0.1:8080:80"]}},
            "'127.0.0.1:8080:80' and '127.0.0.1:8080:80' both need host port 8080",
            "",
        ),
    ],
)
def test_bad_ports_settings_are_usage_errors(
    data: dict[str, Any], expected: str, hint: str
) -> None:
    e = _usage_error(data)
    assert e.message.startswith("/home/u/pyd/default/config.toml: ")
    assert expected in e.message
    assert hint in e.hint and e.hint


def test_every_bad_forward_is_named_at_once() -> None:
    e = _usage_error({"ports": {"forwards": ["1:2", "x:80", "80:99999"]}, "cpus": 0})
    assert "2 invalid settings" in e.message
    assert "'x:80'" in e.message and "'80:99999'" in e.message and "'1:2'" not in e.message
    assert "cpus: must be" in e.message


def test_forwards_for_both_address_families_may_share_a_port() -> None:
    forwards = ["127.0.0.1:8080:80", "[::1]:8080:80", "0.0.0.0:9000:90", "[::]:9000:90"]
    cfg = parse_config({"ports": {"forwards": forwards}}, "f", DEFAULTS, HOST)
    assert cfg.port_forwards == tuple(forwards)


# --- pyd port add / rm ----------------------------------------------------------------------


def _with(*forwards: str) -> InstanceConfig:
    return parse_config({"ports": {"forwards": list(forwards)}}, "f", DEFAULTS, HOST)


def test_added_forwards_come_after_the_others_spelled_in_full() -> None:
    cfg = with_forward_added(_with("0.0.0.0:3000:3000"), "8080:80")
    assert cfg.port_forwards == ("0.0.0.0:3000:3000", "127.0.0.1:8080:80")
    assert cfg.ports_bind == "docker" and cfg.cpus == SHIPPED.cpus
    assert with_forward_added(cfg, "[::1]:8080:80").port_forwards[-1] == "[::1]:8080:80"


@pytest.mark.parametrize(
    ("held", "spec", "expected", "hint"),
    [
        ("127.0.0.1:8080:80", "8080:80", "127.0.0.1:8080:80 is already forwarded", "port ls"),
        (
            "127.0.0.1:8080:80",
            "8080:81",
            "host 127.0.0.1:8080 is already forwarded by 127.0.0.1:8080:80",
            "`pyd port rm 127.0.0.1:8080:80` first",
        ),
        (
            "127.0.0.1:8080:80",
            "0.0.0.0:8080:80",
            "host 0.0.0.0:8080 is already forwarded by 127.0.0.1:8080:80 (a wildcard and a "
            "specific address cannot share a port)",
            "choose another host port",
        ),
        ("[::]:8080:80", "[::1]:8080:80", "host [::1]:8080 is already forwarded by", ""),
    ],
)
def test_adding_a_forward_whose_host_address_is_taken_is_refused(
    held: str, spec: str, expected: str, hint: str
) -> None:
    with pytest.raises(UsageError) as e:
        with_forward_added(_with(held), spec)
    assert e.value.exit_code == 2
    assert e.value.message == expected or e.value.message.startswith(expected)
    assert hint in e.value.hint


def test_adding_a_bad_spec_is_a_usage_error_with_an_example() -> None:
    with pytest.raises(UsageError) as e:
        with_forward_added(SHIPPED, "localhost:8080:80")
    assert "is not an IP address" in e.value.message and "127.0.0.1:8080:80" in e.value.hint


@pytest.mark.parametrize(
    ("text", "left"),
    [
        ("0.0.0.0:8080:80", ("[::1]:9000:90", "127.0.0.1:7000:70")),
        ("8080:80", ("[::1]:9000:90", "127.0.0.1:7000:70")),  # any address when left out
        ("8080:80/tcp", ("[::1]:9000:90", "127.0.0.1:7000:70")),
        ("8080", ("[::1]:9000:90", "127.0.0.1:7000:70")),
        ("0.0.0.0:8080", ("[::1]:9000:90", "127.0.0.1:7000:70")),
        ("[::1]:9000", ("0.0.0.0:8080:80", "127.0.0.1:7000:70")),
        ("[::1]:9000:90", ("0.0.0.0:8080:80", "127.0.0.1:7000:70")),
        (" 7000 ", ("0.0.0.0:8080:80", "[::1]:9000:90")),
    ],
)
def test_a_forward_is_removed_by_its_spec_or_its_host_side(
    text: str, left: tuple[str, ...]
) -> None:
    cfg = _with("0.0.0.0:8080:80", "[::1]:9000:90", "7000:70")
    assert with_forward_removed(cfg, text).port_forwards == left


@pytest.mark.parametrize(
    "text", ["127.0.0.1:8080:80", "127.0.0.1:8080", "8080:81", "8081", "[::1]:8080"]
)
def test_removing_what_is_not_there_lists_the_manual_forwards(text: str) -> None:
    cfg = _with("0.0.0.0:8080:80", "7000:70")
    with pytest.raises(UsageError) as e:
        with_forward_removed(cfg, text)
    assert e.value.exit_code == 2
    assert e.value.message == f"no manual forward matches {text!r}"
    assert "the manual forwards are: 0.0.0.0:8080:80, 127.0.0.1:7000:70" in e.value.hint


def test_removing_from_no_forwards_says_there_are_none() -> None:
    with pytest.raises(UsageError, match="there are none"):
        with_forward_removed(SHIPPED, "8080")


def test_removing_by_a_port_that_two_forwards_share_asks_for_the_address() -> None:
    cfg = _with("127.0.0.1:8080:80", "[::1]:8080:80")
    with pytest.raises(UsageError) as e:
        with_forward_removed(cfg, "8080")
    assert e.value.message == "'8080' matches 2 forwards: 127.0.0.1:8080:80, [::1]:8080:80"
    assert "pyd port rm [::1]:8080:80" in e.value.hint
    assert with_forward_removed(cfg, "[::1]:8080").port_forwards == ("127.0.0.1:8080:80",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("70000", "host port 70000 is outside 1-65535"),
        ("1.2.3:8080", "'1.2.3' is not an IP address"),
        ("[1.2.3.4]:8080", "only IPv6 addresses go in brackets"),
        ("web", "invalid port forward 'web'"),
        ("8080:80:90:100", "too many ':'"),
    ],
)
def test_removing_by_bad_input_explains_both_forms(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as e:
        with_forward_removed(_with("8080:80"), text)
    assert expected in e.value.message
    assert "8080, 127.0.0.1:8080" in e.value.hint


# --- the file -------------------------------------------------------------------------------


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "config.toml", HOST) == SHIPPED
    assert not (tmp_path / "config.toml").exists()


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "new" / "config.toml"
    cfg = InstanceConfig(
        4, 3072, 64, "kvm", "qemu", "", "localhost", ("0.0.0.0:8080:80",), (HOME_SHARE,)
    )
    save_config(path, cfg, HOST)
    assert load_config(path, HOST) == cfg
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


def test_every_platform_defaults_to_backend_auto() -> None:
    # auto runs QEMU directly on Windows and macOS (vm/backends/choice.py).
    for host in (
        Host("win32", "C:\\Users\\u"),
        Host("linux", "/home/u"),
        Host("darwin", "/Users/u"),
    ):
        assert platform_defaults(host)["backend"] == "auto"


def test_dotted_ports_keys_are_read_and_stay_dotted(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('cpus = 3\nports.bind = "localhost"  # on the train\n')
    cfg = load_config(path)
    assert cfg.ports_bind == "localhost"
    save_config(path, with_forward_added(cfg, "8080:80"))
    text = path.read_text()
    assert text.startswith('cpus = 3\nports.bind = "localhost"  # on the train\n')
    assert 'ports.forwards = ["127.0.0.1:8080:80"]\n' in text
    assert "[ports]" not in text
    assert load_config(path).port_forwards == ("127.0.0.1:8080:80",)


def test_a_file_from_before_ports_gains_a_ports_table_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    before = 'cpus = 2\nmemory = "2GiB"\ndisk = "20GiB"\naccel = "auto"\nbackend = "libvirt"\n'
    before += 'libvirt_uri = ""  # default connection\n'
    path.write_text(before)
    save_config(path, with_forward_added(load_config(path), "8080:80"))
    assert path.read_text() == (
        before + '\n[ports]\nbind = "docker"\nforwards = ["127.0.0.1:8080:80"]\n'
        "\n[network]\nhost_access = true\nhost_dns = true\n"
    )


_PORTS_FILE = """\
cpus = 3

# LAN access for the demo box
[ports]
bind = "docker"  # parity with the Linux CI runners
forwards = [
  "8080:80",  # the web app
  "0.0.0.0:5432:5432",  # postgres for the team
]
"""


def test_adding_and_removing_forwards_keeps_the_users_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_PORTS_FILE)
    cfg = with_forward_added(load_config(path), "9000:9000")
    save_config(path, cfg)
    text = path.read_text()
    assert "# LAN access for the demo box\n[ports]\n" in text
    assert 'bind = "docker"  # parity with the Linux CI runners\n' in text
    assert '"8080:80",  # the web app\n' in text  # the user's spelling stays
    assert '"0.0.0.0:5432:5432",  # postgres for the team\n' in text
    assert text.index("postgres") < text.index('"127.0.0.1:9000:9000"')
    assert load_config(path) == cfg

    save_config(path, with_forward_removed(cfg, "5432"))
    text = path.read_text()
    assert "5432" not in text and "postgres for the team" not in text
    assert '"8080:80",  # the web app\n' in text
    assert load_config(path).port_forwards == ("127.0.0.1:8080:80", "127.0.0.1:9000:9000")

    save_config(path, with_value(load_config(path), "ports.bind", "localhost"))
    assert 'bind = "localhost"  # parity with the Linux CI runners\n' in path.read_text()

    emptied = with_forward_removed(with_forward_removed(load_config(path), "8080"), "9000")
    save_config(path, emptied)
    assert "forwards = []\n" in path.read_text()
    assert load_config(path) == emptied


def test_a_new_top_level_setting_leaves_the_comment_above_ports_with_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(_PORTS_FILE)
    cfg = with_value(load_config(path), "memory", "4GiB")
    save_config(path, cfg)
    text = path.read_text()
    assert text.startswith('cpus = 3\nmemory = "4GiB"\n')
    assert "\n# LAN access for the demo box\n[ports]\n" in text
    assert load_config(path) == cfg


def test_a_file_with_only_ports_gets_the_other_settings_above_the_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('# LAN access\n[ports]\nbind = "localhost"\n')
    cfg = with_value(load_config(path), "cpus", "4")
    save_config(path, cfg)
    text = path.read_text()
    assert text.startswith("cpus = 4\n")
    assert '\n# LAN access\n[ports]\nbind = "localhost"\n' in text
    assert load_config(path) == cfg


def test_the_shipped_defaults_explain_the_bind_policy() -> None:
    from pyd.resources import data_dir

    text = (data_dir("vmconfig") / "defaults.toml").read_text()
    ports = text[text.index("[ports]") :]
    assert 'bind = "docker"' in ports and "forwards = []" in ports
    assert "Docker on a Linux host" in ports and "localhost" in ports


def test_an_inline_ports_table_stays_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('ports = { bind = "localhost" }  # inline\n')
    cfg = with_forward_added(with_forward_added(load_config(path), "1:1"), "2:2")
    save_config(path, cfg)
    first = path.read_text().splitlines()[0]
    assert first.startswith(
        'ports = { bind = "localhost", forwards = ["127.0.0.1:1:1", "127.0.0.1:2:2"]'
    )
    assert first.endswith("}  # inline")
    assert load_config(path) == cfg


# --- network.host_access ----------------------------------------------------------------------


def test_host_access_is_on_by_default_and_set_with_true_or_false() -> None:
    assert parse_config({}, "f", DEFAULTS, HOST).host_access is True
    off = with_value(SHIPPED, "network.host_access", " False")
    assert off.host_access is False
    assert with_value(off, "network.host_access", "true").host_access is True
    with pytest.raises(UsageError) as e:
        with_value(SHIPPED, "network.host_access", "no")
    assert "expected true or false, got 'no'" in e.value.message
    assert e.value.hint and "10.0.2.2" in e.value.hint


def test_host_access_in_the_file_is_a_toml_boolean() -> None:
    cfg = parse_config({"network": {"host_access": False}}, "f", DEFAULTS, HOST)
    assert cfg.host_access is False
    e = _usage_error({"network": {"host_access": "false"}})
    assert "network.host_access: expected true or false, got a string 'false'" in e.message
    e = _usage_error({"network": {"host_acess": False}})
    assert "unknown setting 'network.host_acess'" in e.message


def test_setting_host_access_keeps_the_users_network_table_and_comment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("cpus = 3\n\n[network]\nhost_access = true  # the db on localhost\n")
    save_config(path, with_value(load_config(path), "cpus", "4"))
    assert "host_access = true  # the db on localhost\n" in path.read_text()
    save_config(path, with_value(load_config(path), "network.host_access", "false"))
    assert "[network]\nhost_access = false  # the db on localhost\n" in path.read_text()
    assert load_config(path).host_access is False
