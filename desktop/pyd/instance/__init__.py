"""One instance on disk: its files, the choices kept across restarts, its disks, keys and seed."""
