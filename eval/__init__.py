"""simkit evaluation harness (import name: simkit_eval)."""
