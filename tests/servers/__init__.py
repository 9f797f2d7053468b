"""Small real servers the end-to-end tests put behind a tunnel."""
