"""The per-instance seed disk: what the guest learns about itself at every boot."""
