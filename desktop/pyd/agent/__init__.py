"""The per-instance host agent: a detached process that owns the SSH connection to the guest
and what it carries (the Docker socket, published ports, shares, `pyd docker`)."""
