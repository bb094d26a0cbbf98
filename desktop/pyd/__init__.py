"""pyd: the Docker engine in a small Linux VM, used from the host over SSH."""

__version__ = "0.1.0"
