"""The forwarders the forward benches race, each run as a process of its own: pyd's (the
bench's own `serve` command, holding one paramiko connection as the host agent does) and
OpenSSH's `ssh -N -L` (what Lima and Colima forward with)."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# -- pyd's forwarder --------------------------------------------------------------------------


def report_until_stdin_closes(
    hello: dict[str, Any], more: Callable[[], dict[str, Any]] = dict
) -> None:
    """In the forwarder process, once its forward is up: says it is ready (with `hello`),
    waits until the bench closes its stdin, then reports its own CPU time and peak RSS (and
    `more()`) as one line of JSON."""
    ready = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"ready": True, **hello}), flush=True)
    sys.stdin.read()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "cpu_at_ready_s": ready.ru_utime + ready.ru_stime,
        "max_rss_kib": usage.ru_maxrss,
    }
    print(json.dumps(report | more()), flush=True)


class PydForwarder:
    """A bench's `serve` command (`script serve ARGS…`) as a child process, started and
    ready: `hello` is what it said then. finish() ends it and returns its report."""

    def __init__(self, script: str, args: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, "serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.hello: dict[str, Any] = json.loads(self.proc.stdout.readline() or "{}")
        if not self.hello.get("ready"):
            raise SystemExit("the pyd forwarder did not start")
        self.pid = self.proc.pid

    def finish(self, timeout: float = 30) -> dict[str, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        usage: dict[str, float] = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout)
        return usage


# -- OpenSSH's --------------------------------------------------------------------------------


def ssh_config(work: Path, port: int, key: Path, host_key: str) -> Path:
    """An OpenSSH client config in `work` reaching the guest's sshd on 127.0.0.1:`port` with
    pyd's key, checking its host key."""
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key}\n")
    config = work / "ssh_config"
    config.write_text(
        "Host 127.0.0.1\n"
        f"  IdentityFile {key}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
        "  LogLevel ERROR\n"
    )
    return config


class OpenSSHForward:
    """`ssh -N -L SPEC` to the guest's sshd on `ssh_port`, started and ready (once `ready()`
    says so); `options` go before -L."""

    def __init__(
        self,
        config: Path,
        ssh_port: int,
        spec: str,
        ready: Callable[[], bool],
        options: Sequence[str] = (),
    ) -> None:
        self.proc = subprocess.Popen(
            ["ssh", "-F", str(config), "-N", "-o", "ExitOnForwardFailure=yes", *options,
             "-L", spec, "-p", str(ssh_port), "root@127.0.0.1"],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("ssh -L did not start")
            time.sleep(0.05)
        self.pid = self.proc.pid

    def finish(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
