"""Search commands: SCAN NEARBY WITHIN INTERSECTS (being written; see docs/commands.md)."""
