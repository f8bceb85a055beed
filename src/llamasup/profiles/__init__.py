"""Profiles: records, schema, build, load, store, atomic persist; the only profile file reader."""
