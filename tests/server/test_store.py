"""Pure unit tests of the store's bookkeeping (no server process needed)."""

from geoserver.store.database import Database
from geoserver.store.geometry import make_point


def test_prune_expiry_drops_stale_entries_and_keeps_due_ones():
    """A follower never deletes by itself; pruning keeps its expiry schedule from growing with
    entries that no longer match an object, and stops at one still due (the leader's DEL)."""
    db = Database()
    col = db.get_or_create("k")
    for i in range(100):
        col.set(f"gone{i}", make_point(1, 1), None, 5.0)
        db.schedule_expiry("k", f"gone{i}", 5.0)
        col.delete(f"gone{i}")  # deleted (by the leader's DEL) before pruning
    col.set("due", make_point(1, 1), None, 7.0)
    db.schedule_expiry("k", "due", 7.0)
    col.set("later", make_point(1, 1), None, 50.0)
    db.schedule_expiry("k", "later", 50.0)
    db.prune_expiry(now=10.0)
    assert [(d, oid) for d, _k, oid in sorted(db._expiry)] == [(7.0, "due"), (50.0, "later")]
    col.delete("due")
    db.prune_expiry(now=10.0)
    assert [oid for _d, _k, oid in db._expiry] == ["later"]
