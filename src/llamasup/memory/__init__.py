"""Memory estimates from GGUF metadata: reader, model shape, estimate, cache."""
