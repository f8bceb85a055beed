"""llama-swap's ``config.yaml``: shape, ``cmd`` strings, filters, groups, models."""
