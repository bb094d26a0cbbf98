"""The host docker CLI pointed at an instance: its context files and `pyd env`."""
