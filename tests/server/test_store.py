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


# ---- compact plain points (store/collection.py: Items, PLAIN, PointItem) ----------------------

from geoserver.store import reclaim  # noqa: E402
from geoserver.store.collection import PLAIN, Collection, Item  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_IDS = ["a", "b", "c", "truck1", "", "é", b"\xff".decode("utf-8", "surrogateescape")]
_coord = st.floats(-80, 80)
_ops = st.lists(st.one_of(
    st.tuples(st.just("point"), st.sampled_from(_IDS), _coord, _coord),
    st.tuples(st.just("point"), st.sampled_from(_IDS), _coord, _coord),
    st.tuples(st.just("z"), st.sampled_from(_IDS), _coord, _coord),
    st.tuples(st.just("fields"), st.sampled_from(_IDS), _coord, st.sampled_from([0.0, 1.5, "x"])),
    st.tuples(st.just("ex"), st.sampled_from(_IDS), _coord, st.floats(1, 100)),
    st.tuples(st.just("fset"), st.sampled_from(_IDS), st.sampled_from(["speed", "age"]),
              st.sampled_from([0.0, 2.0, "y"])),
    st.tuples(st.just("expire"), st.sampled_from(_IDS), st.floats(1, 100)),
    st.tuples(st.just("persist"), st.sampled_from(_IDS)),
    st.tuples(st.just("del"), st.sampled_from(_IDS)),
), max_size=40)


def _view(item: Item | None) -> tuple | None:
    if item is None:
        return None
    o = item.obj
    return (o.kind, o.lat, o.lon, o.z, o.bbox, item.fields, item.expires_at)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_collection_with_compact_points_matches_a_plain_model(ops: list[tuple]) -> None:
    """Random SET (plain point, with z, with fields, with EX), FSET, EXPIRE, PERSIST and DEL:
    every read (get, items(), values(), pop, the returned old item) equals a model that keeps a
    full Item per object, and plain points are the ones kept as PLAIN."""
    col, model = Collection(), {}
    for op in ops:
        kind, oid = op[0], op[1]
        if kind in ("point", "z", "fields", "ex"):
            obj = make_point(op[2], op[3] if kind != "fields" and kind != "ex" else 1.0,
                             7.0 if kind == "z" else None)
            fields = {"speed": op[3]} if kind == "fields" else None
            expires = op[3] if kind == "ex" else None
            old = col.set(oid, obj, fields, expires, now=0.0)
            assert _view(old) == _view(model.get(oid))
            merged = dict((model[oid].fields or {}) if oid in model else {})
            merged.update(fields or {})
            merged = {k: v for k, v in merged.items() if v != 0.0} or None
            model[oid] = Item(obj, merged, expires)
        elif kind == "fset":
            item = col.get(oid)
            if item is not None:
                col.set_field(item, op[2], op[3])
                m = model[oid]
                f = dict(m.fields or {})
                if op[3] == 0.0:
                    f.pop(op[2], None)
                else:
                    f[op[2]] = op[3]
                m.fields = f or None
        elif kind == "expire":
            item = col.get(oid)
            if item is not None:
                item.expires_at = op[2]
                model[oid].expires_at = op[2]
        elif kind == "persist":
            item = col.get(oid)
            if item is not None:
                item.expires_at = None
                model[oid].expires_at = None
        else:
            assert _view(col.delete(oid)) == _view(model.pop(oid, None))
        assert len(col) == len(model) == col.num_points
        for key in _IDS:
            assert _view(col.get(key)) == _view(model.get(key))
            item = model.get(key)
            plain = item is not None and item.obj.z is None and not item.fields and item.expires_at is None
            assert (col.items.raw(key) is PLAIN) <= plain  # plain ones may stay Items after EXPIRE/FSET
        assert [(k, _view(v)) for k, v in col.items.items()] == [(k, _view(model[k])) for k in sorted(model)]
        assert [_view(v) for v in col.items.values()] == [_view(model[k]) for k in sorted(model)]


def test_plain_points_are_compact_and_others_are_items() -> None:
    col = Collection()
    col.set("p", make_point(33.5, -115.25), None, None)
    col.set("z", make_point(33.5, -115.25, 10.0), None, None)
    col.set("f", make_point(33.5, -115.25), {"speed": 1.0}, None)
    col.set("e", make_point(33.5, -115.25), None, 100.0)
    assert col.items.raw("p") is PLAIN
    assert all(type(col.items.raw(k)) is Item for k in "zfe")
    item = col.get("p")
    assert (item.obj.lat, item.obj.lon, item.obj.bbox) == (33.5, -115.25, (-115.25, 33.5, -115.25, 33.5))
    assert col.get("p") is not item  # built on every read
    item.expires_at = 5.0  # EXPIRE through the item it read: stored in place of the marker
    assert col.items.raw("p") is item and col.get("p").expires_at == 5.0
    col.set("p", make_point(1.0, 2.0), None, None)  # a plain SET makes it compact again
    assert col.items.raw("p") is PLAIN and col.get("p").expires_at is None
    assert col.weight == 4 * (16 + 1) + len("speed") + 8 + 8  # z: 24


def test_reclaim_frees_compact_points_without_building_items() -> None:
    """A dropped collection is freed by SortedDict's own popitem: no Item is built for a
    compact point (here building one would fail: its index is gone)."""
    from geoserver.store.index import PointIndex

    col = Collection()
    for i in range(3000):
        col.set(f"t{i}", make_point(1.0, float(i % 90)), None, None)
    col.items.points = PointIndex()  # empty: reading a PLAIN value would raise
    sizes = [len(col.items) for _ in reclaim._free(col)]
    assert len(col.items) == 0 and sizes[0] < 3000
