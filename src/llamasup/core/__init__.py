"""Leaf helpers: sizes and durations, YAML with line numbers, ``${env.X}`` substitution."""
