"""pyd's command line (typer); the one place exceptions become messages and exit codes."""
