"""`pyd doctor`: a pre-flight of what pyd needs on this host (checks.py, pure) and the
probes that look (probes.py)."""
