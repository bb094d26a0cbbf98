import io
import shlex
import subprocess
from pathlib import Path

import pycdlib
import pytest

from pyd.errors import UsageError
from pyd.instance.seed import Seed, proxy_ports_at, render_seed
from pyd.instance.seed_iso import write_seed_iso
from pyd.ssh.keys import generate_keypair


def _seed(**kw: object) -> Seed:
    client = generate_keypair("pyd")
    host = generate_keypair("pyd-guest")
    base: dict[str, object] = dict(
        instance_id="default",
        hostname="pyd",
        authorized_key=client.public_openssh,
        host_private_key=host.private_openssh,
        host_public_key=host.public_openssh,
    )
    base.update(kw)
    return Seed(**base)  # type: ignore[arg-type]


def test_seed_carries_keys_and_settings() -> None:
    seed = _seed(
        proxy={"https_proxy": "http://proxy:3128"},
        timezone="Europe/Berlin",
    )
    files = render_seed(seed)
    assert files["pyd/authorized_keys"].decode().strip() == seed.authorized_key
    assert files["pyd/ssh_host_ed25519_key"].decode() == seed.host_private_key
    assert b"local-hostname: pyd" in files["meta-data"]
    env = files["pyd/env"].decode()
    assert "PYD_TIMEZONE=Europe/Berlin\n" in env
    assert "PYD_https_proxy=http://proxy:3128\n" in env


def test_seed_env_is_shell_safe() -> None:
    hostile = "http://x/'; touch /pwned; echo '$(id)"
    env = render_seed(_seed(proxy={"http_proxy": hostile}))["pyd/env"].decode()
    # Sourcing the file in a shell yields the value verbatim and runs nothing.
    out = subprocess.run(
        ["sh", "-c", f'{env}\nprintf %s "$PYD_http_proxy"'], capture_output=True, text=True
    )
    assert out.stdout == hostile
    assert shlex.quote(hostile) in env


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"hostname": "Bad_Name"}, "hostname"),
        ({"timezone": "../../etc/passwd"}, "time zone"),
        ({"proxy": {"LD_PRELOAD": "x"}}, "proxy variable"),
        ({"authorized_key": "ssh-ed25519 AAA\nssh-rsa BBB"}, "authorized key"),
    ],
)
def test_seed_rejects_bad_values(kw: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        render_seed(_seed(**kw))


def test_seed_iso_is_cidata_with_exact_names_and_private(tmp_path: Path) -> None:
    files = render_seed(_seed())
    dest = tmp_path / "seed.iso"
    write_seed_iso(files, dest)
    assert dest.stat().st_mode & 0o777 == 0o600
    iso = pycdlib.PyCdlib()
    iso.open(str(dest))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, data in files.items():
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path="/" + name)
            assert buf.getvalue() == data, name
    finally:
        iso.close()


def _env(seed: Seed) -> dict[str, str]:
    """The PYD_HOST_* variables of pyd/env as the guest's shell reads them."""
    text = render_seed(seed)["pyd/env"].decode()
    show = 'echo "${PYD_HOST_ACCESS-?}|${PYD_HOST_PORTS-?}"'
    out = subprocess.run(["sh", "-c", f"{text}\n{show}"], capture_output=True, text=True)
    values = zip(("PYD_HOST_ACCESS", "PYD_HOST_PORTS"), out.stdout.strip().split("|"), strict=True)
    return {k: v for k, v in values if v != "?"}


def test_host_access_on_by_default_leaves_the_guest_as_it_was() -> None:
    assert _seed().host_access is True
    assert _env(_seed()) == {}


def test_host_access_off_reaches_the_guest_with_the_proxy_ports_it_must_keep() -> None:
    assert _env(_seed(host_access=False)) == {"PYD_HOST_ACCESS": "off", "PYD_HOST_PORTS": ""}
    proxy = {
        "http_proxy": "http://10.0.2.2:3128",
        "HTTPS_PROXY": "http://user:pw@10.0.2.2:8443/",
        "https_proxy": "https://10.0.2.2",  # no port: the scheme's
        "HTTP_PROXY": "10.0.2.2:3128",  # no scheme, as curl and Docker accept it
        "no_proxy": "10.0.2.2:9",  # not a proxy
    }
    env = _env(_seed(host_access=False, proxy=proxy))
    assert env == {"PYD_HOST_ACCESS": "off", "PYD_HOST_PORTS": "443 3128 8443"}


def test_only_proxies_at_the_gateway_keep_a_port() -> None:
    proxy = {"http_proxy": "http://proxy.corp:3128", "https_proxy": "http://10.0.2.2:notaport"}
    assert proxy_ports_at(proxy, "10.0.2.2") == ()
    assert proxy_ports_at({"http_proxy": "http://10.0.2.22:3128"}, "10.0.2.2") == ()
