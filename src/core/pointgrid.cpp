// geoserver._core: the point index of one collection, in C++ (issue 15, first landing).
//
// The same algorithm as the pure-Python twin, geoserver.store.index.PointGrid, step for step,
// so that both give identical answers in identical order (tests/server/test_core_differential.py):
// slots allocated from a LIFO free list, bucketed by 0.01-degree cells keyed row * 2^16 + column
// + 2^15, swap-removal from a bucket (each slot knows its index there), the "more cells than
// occupied -> every live slot in slot order" rule, and the haversine term sin^2(d / 2R) computed
// with the same operations in the same order (compiled with -ffp-contract=off: no fused multiply-add;
// cos(lat) of each point is computed once, on insert, and a candidate whose latitude term alone
// exceeds the bound is rejected before the rest: both exact, so answers do not change).
//
// Ids stay Python str objects (binary-safe through surrogateescape): the index holds a reference
// per slot and finds a slot by id in its own open-addressing table (the str's cached hash,
// pointer equality first, then str equality). Everything runs under the GIL.
//
// A second level, blocks of 2^COARSE_SHIFT x 2^COARSE_SHIFT cells, lists each block's occupied cells,
// so a box over many mostly empty cells (sparse world-wide data) visits the occupied ones instead of
// probing all of them (the twin's candidates_in_box docstring states the rule both follow).
//
// Storage (issue 15, scale): a cell's points are kept in its bucket, contiguous, as (lat, lon,
// coslat, slot) entries in the twin's bucket order, so a ring scan reads one array per cell; a
// slot's record holds its id, the id's hash and where its point is (cell pool entry, index in the
// bucket). Slot numbers, bucket order and every answer are the twin's.
//
// Invariants: slots_[s].id != nullptr exactly for live slots s < next_; table_ holds each live slot
// once; cell_index_[key] is the entry of cells_ (a pool) whose bucket holds the points of the live
// slots of that cell, and for a live slot s, cells_[slots_[s].cell].pts[slots_[s].pos].slot == s;
// blocks_[bkey] lists (as pool entries) every cell of that block with a non-empty bucket, and a
// cell's `pos` is its index there. Both maps are flat open-addressing tables (FlatMap: a key's
// entry moves on insert/erase, so only pool indexes are kept).

#include "pointgrid.hpp"

namespace py = pybind11;
using geocore::PointGrid;

void register_fastpath(py::module_& m);  // fastpath.cpp

PYBIND11_MODULE(_core, m) {
    m.doc() = "geoserver's compiled core: the point index (see docs/spatial-index.md)";
    py::class_<PointGrid>(m, "PointGrid")
        .def(py::init<>())
        .def("__len__", &PointGrid::size)
        .def("insert", &PointGrid::insert, py::arg("oid"), py::arg("lat"), py::arg("lon"))
        .def("remove", &PointGrid::remove, py::arg("oid"))
        .def("slot", &PointGrid::slot, py::arg("oid"))
        .def("point", &PointGrid::point, py::arg("oid"))
        .def("capacity", &PointGrid::capacity)
        .def("num_cells", &PointGrid::num_cells)
        .def("num_blocks", &PointGrid::num_blocks)
        .def("ids_of", &PointGrid::ids_of, py::arg("slots"))
        .def("names", &PointGrid::names)
        .def("coords", &PointGrid::coords, py::arg("slots"))
        .def("candidates_in_box", &PointGrid::candidates_in_box)
        .def("slots_in_box", &PointGrid::slots_in_box)
        .def("ring", &PointGrid::ring)
        .def("bounds", &PointGrid::bounds);
    register_fastpath(m);
}
