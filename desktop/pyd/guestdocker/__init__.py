"""`pyd docker` and `pyd compose`: docker commands on hosts without a docker CLI (issue 6).

The guest's own docker CLI runs the command over SSH, as if it were local: same arguments
(byte for byte), exit code, separate stdout and stderr, stdin, a terminal when the host has
one, and the current directory carried over through the shares. Where the host has a docker
CLI, it is used instead, pointed at the instance.

Pure parts: `cmdline` (reading a docker command line), `workdir` (the current directory in
the guest), `winargs` (Windows paths in arguments), `tools` (what `pyd docker` and `pyd
compose` differ in), `remote` (the guest's command line and environment), `exec_protocol`
(what `pyd docker` and the agent say). Edges: `run` (the SSH
session), `streams` (the host's descriptors and signals), `terminal` (the host's terminal),
`agent_link` (the command run by the agent, on its connection), `direct` (a connection of
its own), `hostcli` (a host docker CLI), `shim` (the `docker` launcher on PATH), `launch`
(one command, end to end). The agent's side is pyd.agent.exec_server.
"""
