"""Benchmarks: transport figures (run.py) and the emulated-link benchmark (lossy.py)."""
