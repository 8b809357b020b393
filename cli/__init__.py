"""simkit command-line interface (import name: simkit_cli)."""
