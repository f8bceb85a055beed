"""llamasup: a supervisor for llama.cpp ``llama-server`` processes driven by YAML profiles."""

__version__ = "0.1.0"
