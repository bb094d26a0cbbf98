"""Start, stop, delete and inspect instances: the orchestration behind the CLI."""
