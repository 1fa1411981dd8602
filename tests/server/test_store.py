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


def test_point_grid_matches_a_model_under_dense_churn():
    """Random SET/move/DEL of 300 ids over a few cells (dense buckets, swap-removals, moves
    inside and across cells): every box query equals a brute-force scan of a plain dict, and
    each bucket index stays consistent."""
    import random

    from geoserver.store.index import PointGrid

    rng = random.Random(7)
    grid, model = PointGrid(), {}
    for step in range(6000):
        oid = f"t{rng.randrange(300)}"
        if rng.random() < 0.2:
            grid.remove(oid)
            model.pop(oid, None)
        else:  # 3x3 cells of 0.01 degrees, many points per cell
            lat, lon = 33.0 + rng.random() * 0.03, -115.0 + rng.random() * 0.03
            grid.insert(oid, lat, lon)
            model[oid] = (lat, lon)
        if step % 500 == 0 or step == 5999:
            for _ in range(20):
                a, b = sorted(33.0 + rng.random() * 0.03 for _ in range(2))
                c, d = sorted(-115.0 + rng.random() * 0.03 for _ in range(2))
                got = sorted(grid.ids[s] for s in grid.slots_in_box(a, c, b, d).tolist())
                want = sorted(o for o, (la, lo) in model.items() if a <= la <= b and c <= lo <= d)
                assert got == want
    assert len(grid) == len(model)
    assert sorted(grid.ids[s] for bucket in grid.cells.values() for s in bucket) == sorted(model)
    for bucket in grid.cells.values():
        assert bucket and all(grid.where[s] == i for i, s in enumerate(bucket))


def test_shape_boxes_match_a_model_under_churn():
    """Random insert/replace/remove of 200 shapes' boxes (freed rows reused): overlap queries
    equal a brute-force scan, and freed rows are never reported."""
    import random

    from geoserver.store.index import ShapeBoxes

    rng = random.Random(11)
    boxes, model = ShapeBoxes(), {}
    for step in range(4000):
        oid = f"s{rng.randrange(200)}"
        if rng.random() < 0.3:
            boxes.remove(oid)
            model.pop(oid, None)
        else:
            lon, lat = rng.uniform(-1, 1), rng.uniform(-1, 1)
            box = (lon, lat, lon + rng.uniform(0, 0.5), lat + rng.uniform(0, 0.5))
            boxes.insert(oid, box)
            model[oid] = box
        if step % 400 == 0 or step == 3999:
            for _ in range(10):
                a, b = sorted(rng.uniform(-1, 1.5) for _ in range(2))
                c, d = sorted(rng.uniform(-1, 1.5) for _ in range(2))
                want = sorted(
                    o for o, (x0, y0, x1, y1) in model.items() if x0 <= d and x1 >= c and y0 <= b and y1 >= a
                )
                assert sorted(boxes.ids_overlapping(a, c, b, d)) == want
    assert len(boxes) == len(model)
    ids, rows = boxes.arrays()
    assert sorted(i for i in ids[: len(rows)] if i is not None) == sorted(model)


def test_expiry_schedule_stays_bounded_when_the_same_ids_are_rewritten():
    """Found in review: every `SET ... EX` pushed a heap entry that stayed until its deadline,
    so 1.2M rewrites of 10 ids with EX 3600 grew memory by ~225 bytes a write. Stale entries
    are now compacted away when the heap doubles; what is due still comes out, once."""
    db = Database()
    col = db.get_or_create("k")
    for i in range(100_000):
        oid = f"t{i % 10}"
        deadline = 1000.0 + i
        col.set(oid, make_point(1, 1), None, deadline)
        db.schedule_expiry("k", oid, deadline)
    assert len(db._expiry) <= 2 * 10 + 4096 + 1
    assert list(db.due_expirations(now=1000.0 + 99_989)) == []  # the last deadlines are ahead
    due = []
    for _key, oid in db.due_expirations(now=1e9):  # as the expiry loop does: delete each one
        due.append(oid)
        col.delete(oid)
    assert sorted(due) == [f"t{i}" for i in range(10)]
