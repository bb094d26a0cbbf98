"""`pyd port add|ls|rm` on an instance that is not started: the forwards kept in config.toml,
what a running agent would be told, and what `ls` shows. No VM and no agent are started."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from filelock import FileLock

from pyd.agent.status_file import AgentState, AgentStatus, parse_status, write_status
from pyd.cli.port_cmd import configured_ports, port_rows, sorted_ports
from pyd.config.settings import with_forward_added
from pyd.config.store import load_config
from pyd.instance.files import InstanceFiles
from pyd.ports.forwards import PortState, PortStatus

from .outcomes import ok, run_pyd, usage


def _pyd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pyd({"PYD_HOME": str(home), "DOCKER_CONFIG": str(home / "docker")}, *args)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A PYD_HOME with a stopped instance "dev" (a config file, as `pyd config set` leaves)."""
    ok(_pyd(tmp_path, "config", "set", "--create", "cpus", "2", "-n", "dev"))
    return tmp_path


def _files(home: Path) -> InstanceFiles:
    return InstanceFiles(home / "instances" / "dev")


def _table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def test_add_ls_rm_round_trip_through_the_config_file(home: Path) -> None:
    r = _pyd(home, "port", "add", "8080:80", "-n", "dev")
    ok(r)
    assert "added 127.0.0.1:8080:80 (host 127.0.0.1:8080 to guest port 80)" in r.stderr
    assert "applies at the next start" in r.stderr
    ok(_pyd(home, "port", "add", "0.0.0.0:5432:5432", "-n", "dev"))
    config = _files(home).config
    assert load_config(config).port_forwards == ("127.0.0.1:8080:80", "0.0.0.0:5432:5432")
    assert "[ports]" in config.read_text()

    r = _pyd(home, "port", "ls", "-n", "dev")
    assert _table(ok(r)) == [
        ["HOST", "GUEST", "PROTO", "ORIGIN", "STATE", "DETAIL"],
        ["0.0.0.0:5432", "127.0.0.1:5432", "tcp", "manual", "stopped"],
        ["127.0.0.1:8080", "127.0.0.1:80", "tcp", "manual", "stopped"],
    ]
    assert "'dev' is not running" in r.stderr

    r = _pyd(home, "port", "rm", "8080", "-n", "dev")
    ok(r)
    assert "removed 127.0.0.1:8080:80; applies at the next start" in r.stderr
    assert load_config(config).port_forwards == ("0.0.0.0:5432:5432",)


def test_a_udp_forward_is_added_beside_tcp_on_one_port_and_removed_by_its_spec(
    home: Path,
) -> None:
    ok(_pyd(home, "port", "add", "5353:53", "-n", "dev"))
    r = _pyd(home, "port", "add", "5353:53/udp", "-n", "dev")
    assert "added 127.0.0.1:5353:53/udp" in ok(r) + r.stderr
    config = _files(home).config
    assert load_config(config).port_forwards == ("127.0.0.1:5353:53", "127.0.0.1:5353:53/udp")
    rows = _table(ok(_pyd(home, "port", "ls", "-n", "dev")))
    assert [row[:3] for row in rows[1:]] == [
        ["127.0.0.1:5353", "127.0.0.1:53", "tcp"],
        ["127.0.0.1:5353", "127.0.0.1:53", "udp"],
    ]
    err = usage(_pyd(home, "port", "rm", "5353", "-n", "dev"))
    assert "'5353' matches 2 forwards" in err and "pyd port rm 127.0.0.1:5353:53/udp" in err
    ok(_pyd(home, "port", "rm", "5353:53/udp", "-n", "dev"))
    assert load_config(config).port_forwards == ("127.0.0.1:5353:53",)


def test_ls_json_lists_the_same_forwards_as_dicts(home: Path) -> None:
    ok(_pyd(home, "port", "add", "[::1]:3000:3000", "-n", "dev"))
    listed = json.loads(ok(_pyd(home, "port", "ls", "--json", "-n", "dev")))
    assert listed == [
        {
            "host": "[::1]:3000",
            "guest": "127.0.0.1:3000",
            "proto": "tcp",
            "origin": "manual",
            "state": "stopped",
            "detail": "",
        }
    ]


def test_ls_of_a_stopped_instance_ignores_the_last_agent_status(home: Path) -> None:
    ok(_pyd(home, "port", "add", "8080:80", "-n", "dev"))
    web = "docker:0123456789ab/web"
    stale = PortStatus("0.0.0.0:9999", "127.0.0.1:9999", "tcp", web, PortState.LISTENING)
    write_status(_files(home).agent_status, AgentStatus(AgentState.READY, pid=1, ports=(stale,)))
    out = ok(_pyd(home, "port", "ls", "-n", "dev"))
    assert "9999" not in out
    assert _table(out)[1:] == [["127.0.0.1:8080", "127.0.0.1:80", "tcp", "manual", "stopped"]]
    assert json.loads(ok(_pyd(home, "port", "ls", "--json", "-n", "dev")))[0]["state"] == (
        "stopped"
    )


@pytest.fixture
def agent_lock(home: Path) -> Iterator[None]:
    """Holds agent.lock as a live agent does, so `pyd` takes the agent to be running."""
    lock = FileLock(_files(home).agent_lock)
    with lock:
        yield


def test_with_the_agent_running_ls_shows_its_report_and_changes_are_live(
    home: Path, agent_lock: None
) -> None:
    ports = (
        PortStatus(
            "0.0.0.0:8080", "127.0.0.1:8080", "tcp", "docker:0123456789ab/web", PortState.LISTENING
        ),
        PortStatus(
            "127.0.0.1:8080",
            "127.0.0.1:80",
            "tcp",
            "manual",
            PortState.CONFLICT,
            "host 127.0.0.1:8080/tcp is taken by 0.0.0.0:8080",
        ),
        PortStatus(
            "0.0.0.0:53", "127.0.0.1:53", "udp", "docker:fedcba987654/dns", PortState.NOT_FORWARDED
        ),
    )
    write_status(_files(home).agent_status, AgentStatus(AgentState.READY, pid=1, ports=ports))
    rows = ok(_pyd(home, "port", "ls", "-n", "dev")).splitlines()
    assert rows[0].split() == ["HOST", "GUEST", "PROTO", "ORIGIN", "STATE", "DETAIL"]
    assert rows[1].startswith("0.0.0.0:53 ") and rows[1].endswith("not forwarded")
    assert rows[3].split()[:5] == ["127.0.0.1:8080", "127.0.0.1:80", "tcp", "manual", "conflict"]
    assert rows[3].endswith("  host 127.0.0.1:8080/tcp is taken by 0.0.0.0:8080")
    listed = json.loads(ok(_pyd(home, "port", "ls", "--json", "-n", "dev")))
    assert [p["origin"] for p in listed] == [
        "docker:fedcba987654/dns",
        "docker:0123456789ab/web",
        "manual",
    ]

    r = _pyd(home, "port", "add", "9000:9000", "-n", "dev")
    assert "applied to the running instance" in ok(r) + r.stderr


def test_ls_before_the_agent_reports_shows_the_manual_forwards_as_unknown(
    home: Path, agent_lock: None
) -> None:
    ok(_pyd(home, "port", "add", "8080:80", "-n", "dev"))
    _files(home).agent_status.unlink(missing_ok=True)
    (row,) = json.loads(ok(_pyd(home, "port", "ls", "--json", "-n", "dev")))
    assert row["state"] == "unknown" and "has not reported" in row["detail"]


def test_bad_specs_are_usage_errors_and_leave_the_file_alone(home: Path) -> None:
    ok(_pyd(home, "port", "add", "8080:80", "-n", "dev"))
    config = _files(home).config
    before = config.read_text()
    for spec, expected in (
        ("53:53/sctp", "SCTP cannot be forwarded"),
        ("8080", "both a host port and a guest port are needed"),
        ("0.0.0.0:8080:81", "host 0.0.0.0:8080 is already forwarded by 127.0.0.1:8080:80"),
        ("127.0.0.1:8080:80", "127.0.0.1:8080:80 is already forwarded"),
    ):
        assert expected in usage(_pyd(home, "port", "add", spec, "-n", "dev"))
    err = usage(_pyd(home, "port", "rm", "9000", "-n", "dev"))
    assert "no manual forward matches '9000'" in err and "127.0.0.1:8080:80" in err
    assert config.read_text() == before


def test_config_set_refuses_the_forwards_list_and_takes_the_bind_policy(home: Path) -> None:
    err = usage(_pyd(home, "config", "set", "ports.forwards", "8080:80", "-n", "dev"))
    assert "pyd port add" in err
    usage(_pyd(home, "config", "set", "ports.bind", "everywhere", "-n", "dev"))
    ok(_pyd(home, "config", "set", "ports.bind", "localhost", "-n", "dev"))
    assert load_config(_files(home).config).ports_bind == "localhost"


def test_port_commands_on_a_missing_instance_say_how_to_create_it(tmp_path: Path) -> None:
    for args in (("add", "8080:80"), ("ls",), ("rm", "8080")):
        err = usage(_pyd(tmp_path, "port", *args, "-n", "ghost"))
        assert "there is no instance named 'ghost'" in err and "pyd start -n ghost" in err
    assert not (tmp_path / "instances" / "ghost").exists()


# --- the listing, without a process ---------------------------------------------------------


def test_port_rows_put_each_forward_under_the_columns() -> None:
    ports = (
        PortStatus("[::]:8080", "[::1]:8080", "tcp", "docker:0123456789ab/web", "listening"),
        PortStatus("127.0.0.1:443", "127.0.0.1:443", "tcp", "manual", "failed", "permission"),
    )
    assert port_rows(ports) == [
        ["HOST", "GUEST", "PROTO", "ORIGIN", "STATE", "DETAIL"],
        ["[::]:8080", "[::1]:8080", "tcp", "docker:0123456789ab/web", "listening", ""],
        ["127.0.0.1:443", "127.0.0.1:443", "tcp", "manual", "failed", "permission"],
    ]


def test_forwards_are_listed_by_host_port_then_address() -> None:
    def at(host: str) -> PortStatus:
        return PortStatus(host, "127.0.0.1:1", "tcp", "manual", "listening")

    ports = [at("[::]:8080"), at("127.0.0.1:10000"), at("0.0.0.0:8080"), at("127.0.0.1:443")]
    assert [p.host for p in sorted_ports(ports)] == [
        "127.0.0.1:443",
        "0.0.0.0:8080",
        "[::]:8080",
        "127.0.0.1:10000",
    ]


def test_configured_ports_show_each_manual_forward_with_the_given_state() -> None:
    shipped = load_config(Path("/nonexistent/config.toml"))
    cfg = with_forward_added(with_forward_added(shipped, "80:8080"), "[::]:443:8443")
    assert configured_ports(cfg, PortState.STOPPED) == (
        PortStatus("127.0.0.1:80", "127.0.0.1:8080", "tcp", "manual", "stopped"),
        PortStatus("[::]:443", "127.0.0.1:8443", "tcp", "manual", "stopped"),
    )


def test_port_states_are_written_and_read_as_the_plain_words(tmp_path: Path) -> None:
    # The status file and `pyd port ls --json` are contracts: an enum member must serialise
    # exactly as the bare string did.
    assert [s.value for s in PortState] == [
        "listening",
        "conflict",
        "failed",
        "not forwarded",
        "stopped",
        "unknown",
    ]
    port = PortStatus("0.0.0.0:53", "127.0.0.1:53", "udp", "manual", PortState.NOT_FORWARDED)
    assert json.dumps(asdict(port)) == json.dumps(asdict(replace(port, state="not forwarded")))
    path = tmp_path / "agent.json"
    write_status(path, AgentStatus(AgentState.READY, 1, ports=(port,)))
    assert '"state": "not forwarded"' in path.read_text()
    read = parse_status(path.read_text())
    assert read is not None and read.ports == (port,)
