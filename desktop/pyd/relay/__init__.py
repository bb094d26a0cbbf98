"""Carrying bytes between host sockets (Unix socket, named pipe) and SSH channels to the guest."""
