"""`pyd docker` and `pyd compose`: docker commands on hosts without a docker CLI (issue 6).

The guest's own docker CLI runs the command over SSH, as if it were local: same arguments
(byte for byte), exit code, separate stdout and stderr, stdin, a terminal when the host has
one, and the current directory carried over through the shares. Where the host has a docker
CLI, it is used instead, pointed at the instance.

Pure parts: `cmdline` (reading a docker command line), `workdir` (the current directory in
the guest), `winargs` (Windows paths in arguments), `remote` (the guest's command line and
environment). Edges: `run` (the SSH session), `terminal` (the host's terminal), `hostcli`
(a host docker CLI), `shim` (the `docker` launcher on PATH), `launch` (one command, end to
end).
"""
