"""IdList's lazy inserts (store/collection.py): ids appended to `pending` (as Collection.set and
the compiled fast path add them) are merged into the order by the first read, whatever that
read is. Random sequences of adds, appends straight to `pending`, removals and every kind of
ordered read are checked against a plain sorted list in byte order, and against sortedcontainers'
own invariant check (`_check`), at load factors small enough that sublists split and the
positional index is rebuilt often."""

from __future__ import annotations

import random

import pytest
from geoserver.binary import raw
from geoserver.store.collection import IdList, IdOrdered
from hypothesis import given, settings
from hypothesis import strategies as st

IDS = st.sampled_from(["a", "b", "c", "truck1", "truck10", "truck2", "é", "z\udcff", "z\udc80", "zz", ""]) | \
    st.text(alphabet="abcxyz019", max_size=4)
OPS = st.lists(st.tuples(st.sampled_from(["add", "pending", "remove", "read"]), IDS,
                         st.integers(0, 9)), max_size=120)


def _read(ids: IdList, kind: int, value: str) -> object:
    """One ordered read of the ten SortedList offers the store."""
    if kind == 0:
        return list(ids)
    if kind == 1:
        return len(ids)
    if kind == 2:
        return list(ids.islice(1, 5))
    if kind == 3:
        return ids.bisect_left(value)
    if kind == 4:
        return ids.bisect_right(value)
    if kind == 5:
        return list(ids.irange(value, None))
    if kind == 6:
        return list(reversed(ids))
    if kind == 7:
        return ids[len(ids) // 2] if len(ids) else None
    if kind == 8:
        return value in ids
    return ids.count(value)


def _expected(model: list[str], kind: int, value: str) -> object:
    key = raw
    if kind == 0:
        return model
    if kind == 1:
        return len(model)
    if kind == 2:
        return model[1:5]
    if kind == 3:
        return sum(1 for m in model if key(m) < key(value))
    if kind == 4:
        return sum(1 for m in model if key(m) <= key(value))
    if kind == 5:
        return [m for m in model if key(m) >= key(value)]
    if kind == 6:
        return model[::-1]
    if kind == 7:
        return model[len(model) // 2] if model else None
    if kind == 8:
        return value in model
    return model.count(value)


@settings(max_examples=300, deadline=None)
@given(OPS, st.sampled_from([4, 8, 1000]))
def test_lazy_inserts_read_like_a_sorted_list(ops: list[tuple[str, str, int]], load: int) -> None:
    ids = IdList()
    ids._reset(load)
    model: list[str] = []
    for op, value, kind in ops:
        if op == "add":
            ids.add(value)
            model.append(value)
        elif op == "pending":  # what the compiled fast path does for a new id
            ids.pending.append(value)
            model.append(value)
        elif op == "remove":
            if value in model:
                ids.remove(value)
                model.remove(value)
            else:
                with pytest.raises(ValueError):
                    ids.remove(value)
        else:
            model.sort(key=raw)
            assert _read(ids, kind, value) == _expected(model, kind, value)
            ids._check()
    model.sort(key=raw)
    assert list(ids) == model
    assert not ids.pending
    ids._check()


def test_ordered_dict_sees_pending_ids_everywhere() -> None:
    """IdOrdered (a collection's ids) over ids only the dict and `_pending` know of: iteration,
    keys views, islice, irange, index, peekitem, pop and del all see them."""
    rnd = random.Random(7)
    ids = [f"truck{rnd.randrange(10**6)}" for _ in range(3000)]
    ids = list(dict.fromkeys(ids))
    od = IdOrdered()
    for oid in ids[:1000]:
        od[oid] = 1
    for oid in ids[1000:]:  # as execute_batch stores a new plain point
        dict.__setitem__(od, oid, 2)
        od._pending.append(oid)
    want = sorted(ids)
    assert list(od) == want
    dict.__setitem__(od, "zzz", 3)
    od._pending.append("zzz")
    assert list(od.keys())[-1] == "zzz" and od.peekitem(-1) == ("zzz", 3)
    dict.__setitem__(od, "aaa", 3)
    od._pending.append("aaa")
    assert od.index("aaa") == 0 and list(od.islice(0, 2)) == ["aaa", want[0]]
    dict.__setitem__(od, "m", 4)
    od._pending.append("m")
    del od["m"]  # removal of an id still pending
    assert "m" not in od and list(od.irange("l", "n")) == [k for k in want if "l" <= k <= "n"]
    assert od.pop("zzz") == 3 and list(od)[-1] == want[-1]
    od._list._check()


def test_pending_ids_never_pile_up() -> None:
    """A load of new ids that never reads the order (an AOF replay, a fleet's SETs) still merges
    every MERGE_AT ids, through IdList.add and through the compiled fast path: no read after
    it pays for a million at once."""
    from geoserver import fastpath
    from geoserver.store.collection import MERGE_AT, STORE_KINDS, Collection

    ids = IdList()
    for i in range(3 * MERGE_AT + 5):
        ids.add(f"py{i:06d}")
    assert len(ids.pending) == 5 and len(ids.__dict__["_lists_"][0]) > 0  # merged, not by a read
    col = Collection()
    if not fastpath.ENABLED:
        pytest.skip("no compiled fast path")
    cols = {"fleet": col}
    sets = b"".join(b"*6\r\n$3\r\nSET\r\n$5\r\nfleet\r\n$8\r\nc%07d\r\n$5\r\nPOINT\r\n"
                    b"$1\r\n1\r\n$1\r\n2\r\n" % i for i in range(2 * MERGE_AT))
    end, *_ = fastpath._execute(bytearray(sets), 0, cols, STORE_KINDS, fastpath.WRITE, 10, 100, 1000,
                                1 << 30, None)
    assert end == len(sets)
    assert len(col.items._list.pending) < MERGE_AT
    assert list(col.items.islice(0, 2)) == ["c0000000", "c0000001"] and len(col.items._list) == len(col.items)
    col.items._list._check()
