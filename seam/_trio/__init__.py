"""The trio shell around the sans-IO core: sockets, timers and streams."""
