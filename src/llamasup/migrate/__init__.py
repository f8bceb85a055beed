"""Importers: llama-swap configs and llama-sidecar environments into profile sets."""
