"""Sidecar and supervisor tests (a package, so its conftest does not clash with tests/)."""
