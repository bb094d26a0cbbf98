"""An existing instance's SSH keys are never replaced silently (issue 13, item 7): a new
instance gets keys, a lost one is reported with the way back, `--new-keys` makes new ones
on purpose and restarts a running VM so that its seed carries them."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from pyd.instance.files import InstanceFiles
from pyd.instance.provision import MissingKeysError, instance_keys
from pyd.instance.state import InstanceState, save_state
from pyd.lifecycle.keys import renew_keys
from pyd.ssh.connect import pinned_client
from pyd.ssh.keys import generate_keypair, pinned_host_key, read_public
from pyd.ssh.openssh import known_hosts_line
from pyd.vm.backends.base import VMState
from tests.unit.fakebackend import FakeBackend, RecordingProgress


def _started(tmp_path: Path, name: str = "dev") -> InstanceFiles:
    files = InstanceFiles(tmp_path / name)
    instance_keys(files)
    save_state(files.state, InstanceState(2222, "k", "tcg"))
    return files


def test_a_new_instance_gets_keys_and_keeps_them(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "dev")
    client, host = instance_keys(files)
    assert client.public_openssh.startswith("ssh-ed25519 ")
    assert instance_keys(files) == (client, host)


@pytest.mark.parametrize("lost", ["ssh/id_ed25519", "ssh/host_ed25519.pub"])
def test_a_lost_key_of_a_started_instance_is_refused_with_the_way_back(
    tmp_path: Path, lost: str
) -> None:
    files = _started(tmp_path)
    before = read_public(files.client_key)
    (files.root / lost).unlink()
    with pytest.raises(MissingKeysError) as info:
        instance_keys(files)
    assert lost in info.value.message and "'dev'" in info.value.message
    assert "pyd start --new-keys -n dev" in info.value.hint
    assert not (files.root / lost).exists()  # nothing made behind the user's back
    if lost != "ssh/id_ed25519":
        assert read_public(files.client_key) == before


def test_disks_alone_make_an_instance_existing(tmp_path: Path) -> None:
    files = InstanceFiles(tmp_path / "default")
    files.root.mkdir()
    files.data_disk.write_bytes(b"docker's data")
    with pytest.raises(MissingKeysError) as info:
        instance_keys(files)
    assert "pyd start --new-keys`" in info.value.hint  # the default instance: no -n


def test_new_keys_on_a_running_vm_power_it_off_first(tmp_path: Path) -> None:
    files = _started(tmp_path)
    old = read_public(files.client_key), read_public(files.host_key)
    files.client_key.unlink()
    files.known_hosts.write_text("[127.0.0.1]:2222 ssh-ed25519 OLD\n")
    vm = FakeBackend(VMState.RUNNING)
    assert renew_keys(files, vm, VMState.RUNNING, RecordingProgress()) is VMState.STOPPED
    assert vm.calls == ["shutdown"]
    client, host = instance_keys(files)
    assert (client.public_openssh, host.public_openssh) != old
    assert client.public_openssh != old[0] and host.public_openssh != old[1]
    assert not files.known_hosts.exists()  # it pinned the old host key


def test_new_keys_on_a_stopped_vm_leave_it_alone(tmp_path: Path) -> None:
    files = _started(tmp_path)
    vm = FakeBackend(VMState.STOPPED)
    assert renew_keys(files, vm, VMState.STOPPED, RecordingProgress()) is VMState.STOPPED
    assert vm.calls == []


def _entries(keys: paramiko.HostKeys) -> dict[str, dict[str, str]]:
    return {host: {k: v.get_base64() for k, v in keys[host].items()} for host in keys}


@pytest.mark.parametrize("port", [2222, 22])
def test_paramiko_and_openssh_pin_the_same_host_key(tmp_path: Path, port: int) -> None:
    """The agent's connection (paramiko) and `pyd ssh` (OpenSSH, through known_hosts) must
    trust exactly one key, the same one, for the same host pattern."""
    host_key = generate_keypair("pyd-guest").public_openssh
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(port, host_key))
    client = pinned_client(pinned_host_key("127.0.0.1", port, host_key))
    pinned = _entries(client.get_host_keys())
    assert pinned == _entries(paramiko.HostKeys(str(known_hosts)))
    assert pinned == {
        ("127.0.0.1" if port == 22 else f"[127.0.0.1]:{port}"): {"ssh-ed25519": host_key.split()[1]}
    }
