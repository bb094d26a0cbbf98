"""Test helpers on top of pyd.vm.throwaway (boot, SSH, guest commands)."""

from __future__ import annotations

from pathlib import Path

import paramiko

from pyd.vm.throwaway import check


def build_busybox_image(client: paramiko.SSHClient, busybox: Path, tag: str) -> None:
    """A FROM-scratch image from Debian's busybox-static: no registry needed."""
    check(client, "mkdir -p /tmp/bbctx")
    with client.open_sftp() as sftp:
        sftp.put(str(busybox), "/tmp/bbctx/busybox")
        sftp.chmod("/tmp/bbctx/busybox", 0o755)
        with sftp.open("/tmp/bbctx/Dockerfile", "w") as f:
            f.write(
                "FROM scratch\nCOPY busybox /bin/busybox\n"
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            )
    check(client, f"docker build -q -t {tag} /tmp/bbctx")
