"""The llama-server flag model: vocabulary, the curated table, parse/normalise/merge, ``--help``."""
