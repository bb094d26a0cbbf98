"""Host directories shared into the guest (reverse SSHFS)."""
