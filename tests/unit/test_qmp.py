"""QEMU's monitor: the transport chosen per platform (linux, darwin, win32) and its QEMU
options, the TLS credentials, and the client against loopback stand-ins for QEMU (plain
and mutual TLS)."""

from __future__ import annotations

import json
import socket
import ssl
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pyd.vm.backends.qmp import (
    QmpClient,
    QmpCommandError,
    QmpEndpoint,
    QmpError,
    QmpTransport,
    command_error,
    connect,
    monitor_port_taken,
    qmp_argv,
    qmp_run,
    qmp_transport,
)
from pyd.vm.backends.qmp_tls import (
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    FILES,
    SERVER_CERT,
    SERVER_KEY,
    make_credentials,
)
from tests.unit.listening import accept_each

# -- the transport, per platform ------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "environ", "expected"),
    [
        ("linux", {}, QmpTransport.UNIX),
        ("darwin", {}, QmpTransport.UNIX),
        ("win32", {}, QmpTransport.TLS),  # no AF_UNIX in CPython on Windows
        ("win32", {"PYD_QMP": "unix"}, QmpTransport.TLS),
        ("linux", {"PYD_QMP": "tls"}, QmpTransport.TLS),
        ("darwin", {"PYD_QMP": "tls"}, QmpTransport.TLS),
    ],
)
def test_the_transport_per_platform(
    platform: str, environ: dict[str, str], expected: QmpTransport
) -> None:
    assert qmp_transport(platform, environ) is expected


def test_qemu_options_of_each_transport() -> None:
    unix = QmpEndpoint(QmpTransport.UNIX, sock=Path("/i/a,b/qmp.sock"))
    assert qmp_argv(unix) == ["-qmp", "unix:/i/a,,b/qmp.sock,server=on,wait=off"]
    tls = QmpEndpoint(QmpTransport.TLS, port=45678, tls_dir=Path("C:/Users/u/pyd/qmp-tls"))
    assert qmp_argv(tls) == [
        "-object",
        "tls-creds-x509,id=pydqmptls,endpoint=server,dir=C:/Users/u/pyd/qmp-tls,verify-peer=on",
        "-chardev",
        "socket,id=pydqmp,host=127.0.0.1,port=45678,server=on,wait=off,tls-creds=pydqmptls",
        "-mon",
        "chardev=pydqmp,mode=control",
    ]


# -- QEMU's own words for a monitor port taken before it bound it ---------------------------

_TAKEN = "Failed to find an available port"


def _chardev(port: int) -> str:
    options = f"id=pydqmp,host=127.0.0.1,port={port},server=on,wait=off,tls-creds=pydqmptls"
    return f"-chardev socket,{options}"


@pytest.mark.parametrize(
    ("platform", "program", "reason"),
    [
        # Reproduced here with QEMU 7.2 (stderr under -daemonize, qemu.log when detached).
        ("linux", "qemu-system-x86_64", f"{_TAKEN}: Address already in use"),
        ("darwin", "/opt/homebrew/bin/qemu-system-aarch64", f"{_TAKEN}: Address already in use"),
        # The same words on Windows, whatever its C library's strerror says after them; a
        # port held exclusively or reserved by Windows fails bind() with WSAEACCES instead.
        ("win32", r"C:\Program Files\qemu\qemu-system-x86_64.exe", f"{_TAKEN}: Unknown error"),
        ("win32", "qemu-system-x86_64.exe", "Failed to bind socket: Permission denied"),
    ],
)
def test_qemu_exiting_because_the_monitor_port_is_taken_is_recognised(
    platform: str, program: str, reason: str
) -> None:
    tls = QmpEndpoint(QmpTransport.TLS, port=45678, tls_dir=Path("qmp-tls"))
    output = f"warning: an earlier line\n{program}: {_chardev(45678)}: {reason}\n"
    assert monitor_port_taken(output, tls), platform


@pytest.mark.parametrize(
    "output",
    [
        f"qemu-system-x86_64: {_chardev(45679)}: {_TAKEN}: Address already in use",  # another port
        # The guest's SSH forward, not the monitor: a fresh monitor port would not help.
        "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:45678-:22: "
        "Could not set up host forwarding rule 'tcp:127.0.0.1:45678-:22'",
        f"qemu-system-x86_64: {_chardev(45678)}: TLS credentials could not be loaded",
        "qemu-system-x86_64: -drive file=os.qcow2: Could not open 'os.qcow2': Permission denied",
        "",
    ],
)
def test_other_start_failures_are_not_a_taken_monitor_port(output: str) -> None:
    tls = QmpEndpoint(QmpTransport.TLS, port=45678, tls_dir=Path("qmp-tls"))
    assert not monitor_port_taken(output, tls)


def test_a_unix_socket_monitor_has_no_port_to_lose() -> None:
    unix = QmpEndpoint(QmpTransport.UNIX, sock=Path("qmp.sock"))
    assert not monitor_port_taken(f"qemu-system-x86_64: {_chardev(0)}: {_TAKEN}: x", unix)


# -- credentials ----------------------------------------------------------------------------


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_credentials_a_ca_signing_a_server_and_a_client_all_private(tmp_path: Path) -> None:
    d = tmp_path / "qmp-tls"
    make_credentials(d, "t")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in d.iterdir()) == sorted(FILES)  # no CA key kept
    assert {stat.S_IMODE((d / f).stat().st_mode) for f in FILES} == {0o600}
    ca, server, client = _cert(d / CA_CERT), _cert(d / SERVER_CERT), _cert(d / CLIENT_CERT)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = x509.ExtendedKeyUsage
    assert list(client.extensions.get_extension_for_class(eku).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert list(server.extensions.get_extension_for_class(eku).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    old_ca = (d / CA_CERT).read_bytes()
    make_credentials(d, "t")  # every start: a new CA
    assert (d / CA_CERT).read_bytes() != old_ca


# -- the client against a stand-in monitor ---------------------------------------------------

GREETING = b'{"QMP": {"version": {}, "capabilities": ["oob"]}}\r\n'


class Monitor:
    """A loopback QMP stand-in; `script` plays one connection (a file over it)."""

    def __init__(
        self,
        script: Callable[[socket.socket], None],
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.errors: list[BaseException] = []
        self.script, self.context = script, context
        self.thread = accept_each(self.sock, self._play)

    def _play(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            with conn:
                self.script(conn)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(e)

    def close(self) -> None:
        self.sock.close()


def _lines(conn: socket.socket) -> Iterator[dict[str, object]]:
    with conn.makefile("rb") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _qemu_like(conn: socket.socket) -> None:
    """Greeting, then a reply to each command, an event before the reply to query-status."""
    conn.sendall(GREETING)
    for request in _lines(conn):
        if request["execute"] == "query-status":
            conn.sendall(b'{"event": "RESUME", "timestamp": {"seconds": 1}}\n')
            conn.sendall(b'{"return": {"status": "running", "running": true}}\n')
        else:
            conn.sendall(json.dumps({"return": {}, "id": request.get("execute")}).encode() + b"\n")


def _client(port: int, nudge: bool = False) -> tuple[socket.socket, QmpClient]:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    return s, QmpClient(s, timeout=2, nudge=nudge)


def test_greeting_capabilities_and_replies_past_events() -> None:
    monitor = Monitor(_qemu_like)
    try:
        s, client = _client(monitor.port)
        with s:
            reply = client.execute("query-status")
            assert reply == {"return": {"status": "running", "running": True}}
            assert client.execute("cont") == {"return": {}, "id": "cont"}
    finally:
        monitor.close()


def _refusing(refused: str, seen: list[str] | None = None) -> Callable[[socket.socket], None]:
    """QEMU's way of refusing `refused`: an error reply, and the session goes on. Every
    command received lands in `seen`."""

    def script(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        for request in _lines(conn):
            command = str(request["execute"])
            if seen is not None:
                seen.append(command)
            if command == refused:
                error = {"class": "GenericError", "desc": f"{command} is not possible now"}
                conn.sendall(json.dumps({"error": error}).encode() + b"\n")
            else:
                conn.sendall(json.dumps({"return": {}, "id": command}).encode() + b"\n")

    return script


def test_an_error_reply_raises_with_qemus_class_and_words() -> None:
    monitor = Monitor(_refusing("system_powerdown"))
    try:
        s, client = _client(monitor.port)
        with s:
            with pytest.raises(QmpCommandError) as e:
                client.execute("system_powerdown")
            assert (e.value.command, e.value.error_class, e.value.desc) == (
                "system_powerdown",
                "GenericError",
                "system_powerdown is not possible now",
            )
            assert str(e.value) == (
                "QEMU refused system_powerdown: system_powerdown is not possible now (GenericError)"
            )
            assert isinstance(e.value, QmpError)  # still "no usable answer" to OSError callers
            assert client.execute("cont") == {"return": {}, "id": "cont"}  # the session goes on
    finally:
        monitor.close()


def test_capabilities_refused_fails_the_connection() -> None:
    monitor = Monitor(_refusing("qmp_capabilities"))
    try:
        with pytest.raises(QmpCommandError, match="QEMU refused qmp_capabilities"):
            _client(monitor.port)
    finally:
        monitor.close()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"return": {}}, None),
        ({"return": {"status": "running"}, "id": "x"}, None),
        (
            {"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}},
            ("CommandNotFound", "The command foo has not been found"),
        ),
        ({"error": {}}, ("?", "no description")),
        ({"error": "bare words"}, ("?", "bare words")),
    ],
)
def test_the_error_a_reply_carries(
    reply: dict[str, object], expected: tuple[str, str] | None
) -> None:
    error = command_error("foo", reply)
    if expected is None:
        assert error is None
    else:
        assert error is not None and (error.error_class, error.desc) == expected
        assert error.command == "foo"


def test_a_closed_connection_is_a_clear_error() -> None:
    def greet_and_hang_up(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        conn.recv(100)

    def no_greeting(conn: socket.socket) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")

    for script, message in ((greet_and_hang_up, "closed the connection"),
                            (no_greeting, "not a QMP")):  # fmt: skip
        monitor = Monitor(script)
        try:
            with pytest.raises(QmpError, match=message):
                _client(monitor.port)
        finally:
            monitor.close()


def test_a_silent_monitor_times_out() -> None:
    def mute(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        conn.recv(100)
        conn.recv(100)

    monitor = Monitor(mute)
    try:
        s = socket.create_connection(("127.0.0.1", monitor.port), timeout=2)
        with s, pytest.raises(QmpError, match="did not answer"):
            QmpClient(s, timeout=0.3)
    finally:
        monitor.close()


def test_a_monitor_that_holds_its_reply_until_more_bytes_arrive_is_nudged() -> None:
    """QEMU 7.2's TLS monitor sends each reply only when the client sends again."""

    def lagging(conn: socket.socket) -> None:
        conn.sendall(GREETING)
        pending: list[bytes] = []
        with conn.makefile("rb") as f:
            for line in f:
                for reply in pending:
                    conn.sendall(reply)
                pending = [b'{"return": {}}\n'] if line.strip() else []

    monitor = Monitor(lagging)
    try:
        s, client = _client(monitor.port, nudge=True)
        with s:
            assert client.execute("query-status") == {"return": {}}
    finally:
        monitor.close()


# -- mutual TLS -----------------------------------------------------------------------------


def _server_context(d: Path) -> ssl.SSLContext:
    """What QEMU's tls-creds-x509 with verify-peer=on does: a client must present a
    certificate the CA signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(d / SERVER_CERT), str(d / SERVER_KEY))
    context.load_verify_locations(str(d / CA_CERT))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_tls_monitor_serves_the_client_with_the_key(tmp_path: Path) -> None:
    d = tmp_path / "qmp-tls"
    make_credentials(d, "t")
    monitor = Monitor(_qemu_like, _server_context(d))
    try:
        endpoint = QmpEndpoint(QmpTransport.TLS, port=monitor.port, tls_dir=d)
        assert qmp_run(endpoint, "query-status")["return"] == {
            "status": "running",
            "running": True,
        }
    finally:
        monitor.close()


def test_a_run_of_commands_stops_at_the_first_qemu_refuses(tmp_path: Path) -> None:
    d = tmp_path / "qmp-tls"
    make_credentials(d, "t")
    seen: list[str] = []
    monitor = Monitor(_refusing("cont", seen), _server_context(d))
    try:
        endpoint = QmpEndpoint(QmpTransport.TLS, port=monitor.port, tls_dir=d)
        with pytest.raises(QmpCommandError, match="QEMU refused cont: cont is not possible now"):
            qmp_run(endpoint, "query-status", "cont", "system_powerdown")
        assert seen == ["qmp_capabilities", "query-status", "cont"]  # no powerdown after it
    finally:
        monitor.close()


def test_tls_monitor_gives_nothing_to_a_client_without_the_certificate(tmp_path: Path) -> None:
    d = tmp_path / "qmp-tls"
    make_credentials(d, "t")
    monitor = Monitor(_qemu_like, _server_context(d))
    try:
        no_cert = ssl.create_default_context(cafile=str(d / CA_CERT))
        got = b""
        with socket.create_connection(("127.0.0.1", monitor.port), timeout=2) as raw:
            try:
                with no_cert.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b'{"execute": "qmp_capabilities"}\n')
                    got = s.recv(4096)
            except (ssl.SSLError, OSError):
                pass
        assert b"QMP" not in got
        # Another instance's credentials (its own CA) do not open this monitor either.
        other = tmp_path / "other"
        make_credentials(other, "o")
        (other / CA_CERT).write_bytes((d / CA_CERT).read_bytes())  # trusts this server
        with pytest.raises((ssl.SSLError, OSError)):
            endpoint = QmpEndpoint(QmpTransport.TLS, port=monitor.port, tls_dir=other)
            qmp_run(endpoint, "query-status")
        assert (d / CLIENT_KEY).exists()
    finally:
        monitor.close()


def test_tls_client_refuses_a_server_its_ca_did_not_sign(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    make_credentials(ours, "t")
    make_credentials(theirs, "t")  # a stranger on the port with a look-alike certificate
    monitor = Monitor(_qemu_like, _server_context(theirs))
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(QmpEndpoint(QmpTransport.TLS, port=monitor.port, tls_dir=ours))
    finally:
        monitor.close()
