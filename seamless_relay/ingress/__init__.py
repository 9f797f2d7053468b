"""Public listeners: HTTP(S), per-tunnel TCP and UDP, and relay-only TCP passthrough."""
