"""What pyd needs of the host OS: paths, atomic files, locks, processes, loopback ports,
memory, threads."""
