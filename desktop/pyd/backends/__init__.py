"""Ways of running the guest VM: direct QEMU (here) and libvirt (pyd start)."""
