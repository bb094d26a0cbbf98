"""The per-instance host agent: a detached process that owns the SSH connection to the
guest and everything carried on it (the Docker socket today; ports and mounts later)."""
