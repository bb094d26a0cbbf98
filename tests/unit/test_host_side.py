"""Pure host-side helpers: shell exports, the ssh command line, proxies, time zone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyd.dockercli.shell_env import detect_shell, env_script
from pyd.errors import PydError, UsageError
from pyd.host.env import host_timezone, proxy_settings
from pyd.instance.state import InstanceState, parse_state, save_state
from pyd.ssh.openssh import known_hosts_line, remote_command, ssh_argv

HOST = "unix:///home/me/.local/share/pyd/instances/default/sock/docker.sock"


def test_bash_exports_survive_a_real_shell() -> None:
    tricky = "unix:///tmp/it's here/docker.sock"
    script = env_script("bash", tricky, "default")
    out = subprocess.run(
        ["bash", "-c", script + 'printf %s "$DOCKER_HOST"'], capture_output=True, text=True
    ).stdout
    assert out == tricky


def test_each_shell_gets_its_own_syntax() -> None:
    assert env_script("fish", HOST, "dev").startswith(f"set -gx DOCKER_HOST '{HOST}';")
    assert "pyd env --shell fish -n dev | source" in env_script("fish", HOST, "dev")
    assert env_script("powershell", HOST, "default").startswith(f"$Env:DOCKER_HOST = '{HOST}'")
    assert env_script("cmd", HOST, "default").startswith(f"SET DOCKER_HOST={HOST}\n")
    with pytest.raises(UsageError) as e:
        env_script("tcsh", HOST, "default")
    assert e.value.exit_code == 2 and "powershell" in e.value.hint


def test_shell_is_detected_from_the_shell_variable() -> None:
    assert detect_shell("/usr/bin/fish", windows=False) == "fish"
    assert detect_shell("", windows=True) == "powershell"
    assert detect_shell("/bin/dash", windows=False) == "bash"


def test_ssh_argv_pins_the_host_key_and_quotes_several_words(tmp_path: Path) -> None:
    argv = ssh_argv("ssh", 2222, tmp_path / "k", tmp_path / "kh", ["echo", "a b"], tty=False)
    assert argv[1:3] == ["-p", "2222"]
    assert "StrictHostKeyChecking=yes" in argv and f"UserKnownHostsFile={tmp_path / 'kh'}" in argv
    assert argv[-2:] == ["root@127.0.0.1", "echo 'a b'"]
    assert remote_command(["ls | wc -l"]) == "ls | wc -l"
    assert "-t" in ssh_argv("ssh", 1, tmp_path, tmp_path, [], tty=True)
    line = known_hosts_line(2222, "ssh-ed25519 AAAAC3Nza pyd-guest")
    assert line == "[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza\n"


def test_proxies_on_host_loopback_are_rewritten_for_the_guest() -> None:
    env = {
        "HTTP_PROXY": "http://127.0.0.1:3128",
        "https_proxy": "http://user@localhost:3128/",
        "NO_PROXY": "localhost,127.0.0.1",
        "OTHER": "x",
    }
    assert proxy_settings(env) == {
        "HTTP_PROXY": "http://10.0.2.2:3128",
        "https_proxy": "http://user@10.0.2.2:3128/",
        "NO_PROXY": "localhost,127.0.0.1",
    }
    assert proxy_settings({"HTTP_PROXY": "http://proxy.corp:80"}) == {
        "HTTP_PROXY": "http://proxy.corp:80"
    }


def test_timezone_comes_from_the_localtime_link(tmp_path: Path) -> None:
    zone = tmp_path / "usr/share/zoneinfo/Europe/Berlin"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(b"TZif")
    link = tmp_path / "localtime"
    link.symlink_to(zone)
    assert host_timezone(link) == "Europe/Berlin"
    assert host_timezone(tmp_path / "missing") == ""


def test_corrupted_state_file_is_an_error_with_a_hint(tmp_path: Path) -> None:
    save_state(tmp_path / "state.json", InstanceState(2222, "x86_64-abc", "tcg"))
    assert parse_state((tmp_path / "state.json").read_text(), "s") == InstanceState(
        2222, "x86_64-abc", "tcg"
    )
    with pytest.raises(PydError) as e:
        parse_state("{not json", "/x/state.json")
    assert e.value.exit_code == 1 and "/x/state.json" in e.value.message
    assert "image_key" in e.value.hint
