"""The VM backends (libvirt, direct QEMU) behind one small interface, and which one an
instance uses."""
