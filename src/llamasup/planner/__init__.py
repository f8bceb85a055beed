"""The pure planner: plan types, room ledger, ``plan()``, restart policy. No I/O, no clock."""
