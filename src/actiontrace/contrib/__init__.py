"""Integrations that hang off the side of actiontrace: logging."""
