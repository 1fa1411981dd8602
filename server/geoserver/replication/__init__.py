"""Leader -> follower replication by AOF streaming (Tile38's protocol; see docs/replication.md)."""
