// geoserver._core's point index (see pointgrid.cpp for the module and the design notes);
// a header so that the fast path (fastpath.cpp) works on the same objects.

#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace geocore {

constexpr double CELL = 0.01;
constexpr int COARSE_SHIFT = 4;  // a block is 16 x 16 cells (0.16 degrees)
constexpr int64_t FINE_PROBES = 64;  // larger boxes ask the blocks first
constexpr int64_t ROW = int64_t{1} << 16;
constexpr int64_t COL0 = int64_t{1} << 15;
constexpr double COORD_LIMIT = 1e6;  // degrees; callers validate +-90 / +-180, this keeps cells in int64
constexpr double RAD = M_PI / 180.0;
constexpr double HALF_RAD = M_PI / 360.0;
constexpr uint32_t EMPTY = std::numeric_limits<uint32_t>::max();
constexpr uint32_t MAX_SLOTS = EMPTY - 1;

inline int64_t cell_of(double v) {
    if (!std::isfinite(v)) throw py::value_error("coordinate is not a finite number");
    v = std::clamp(v, -COORD_LIMIT, COORD_LIMIT);
    return static_cast<int64_t>(std::floor(v / CELL));
}

inline int64_t key_of(int64_t cy, int64_t cx) { return cy * ROW + cx + COL0; }

inline int64_t block_of(int64_t cy, int64_t cx) { return key_of(cy >> COARSE_SHIFT, cx >> COARSE_SHIFT); }

using Slots = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

struct Cell {
    std::vector<uint32_t> slots;
    int64_t cy = 0, cx = 0;  // its row and column
    uint32_t pos = 0;  // its index in its block's list
};

class PointGrid {
public:
    PointGrid() : table_(64, EMPTY), mask_(63) {}
    PointGrid(const PointGrid&) = delete;
    PointGrid& operator=(const PointGrid&) = delete;

    ~PointGrid() {
        for (PyObject* id : ids_) Py_XDECREF(id);
    }

    size_t size() const { return count_; }
    int64_t capacity() const { return next_; }
    size_t num_cells() const { return cells_.size(); }

    void insert(py::str oid, double lat, double lon) { insert_obj(oid.ptr(), lat, lon); }

    // insert() for a str the caller holds (the fast path, src/core/fastpath.cpp).
    void insert_obj(PyObject* oid, double lat, double lon) {
        const int64_t cy = cell_of(lat), cx = cell_of(lon);
        const int64_t key = key_of(cy, cx);
        const Py_hash_t h = PyObject_Hash(oid);
        if (h == -1) throw py::error_already_set();
        bool found = false;
        size_t pos = find(oid, h, found);
        if (found) {
            const uint32_t slot = table_[pos];
            if (key_of(cell_of(lats_[slot]), cell_of(lons_[slot])) == key) {  // moved within its cell
                lats_[slot] = lat;
                lons_[slot] = lon;
                coslat_[slot] = std::cos(lat * RAD);
                return;
            }
            remove_at(pos, slot);
        }
        uint32_t slot;
        if (!free_.empty()) {
            slot = free_.back();
            free_.pop_back();
        } else {
            slot = grow();
        }
        lats_[slot] = lat;
        lons_[slot] = lon;
        coslat_[slot] = std::cos(lat * RAD);
        Py_INCREF(oid);
        ids_[slot] = oid;
        hashes_[slot] = h;
        ++count_;
        if ((count_ + 1) * 10 > table_.size() * 7) rehash(table_.size() * 2);
        pos = find(oid, h, found);
        table_[pos] = slot;
        auto [it, created] = cells_.try_emplace(key);
        Cell& cell = it->second;
        if (created) {
            cell.cy = cy;
            cell.cx = cx;
            std::vector<Cell*>& block = blocks_[block_of(cy, cx)];
            cell.pos = static_cast<uint32_t>(block.size());
            block.push_back(&cell);
        }
        where_[slot] = static_cast<uint32_t>(cell.slots.size());
        cell.slots.push_back(slot);
    }

    void remove(py::str oid) {
        bool found = false;
        const size_t pos = find(oid.ptr(), hash(oid), found);
        if (found) remove_at(pos, table_[pos]);
    }

    int64_t slot(py::str oid) {
        bool found = false;
        const size_t pos = find(oid.ptr(), hash(oid), found);
        return found ? static_cast<int64_t>(table_[pos]) : -1;
    }

    // (lat, lon) of an id, or None.
    py::object point(py::str oid) {
        bool found = false;
        const size_t pos = find(oid.ptr(), hash(oid), found);
        if (!found) return py::none();
        const uint32_t s = table_[pos];
        return py::make_tuple(lats_[s], lons_[s]);
    }

    // (lat, lon) of an id the caller holds: false when it is not in the index.
    bool point_of(PyObject* oid, double& lat, double& lon) const {
        const Py_hash_t h = PyObject_Hash(oid);
        if (h == -1) throw py::error_already_set();
        bool found = false;
        const size_t pos = find(oid, h, found);
        if (!found) return false;
        lat = lats_[table_[pos]];
        lon = lons_[table_[pos]];
        return true;
    }

    py::list ids_of(const Slots& slots) const {
        const auto n = slots.size();
        const int64_t* s = slots.data();
        py::list out(n);
        for (py::ssize_t i = 0; i < n; ++i) {
            PyObject* id = ids_[checked(s[i])];
            id = id ? id : Py_None;
            Py_INCREF(id);
            PyList_SET_ITEM(out.ptr(), i, id);
        }
        return out;
    }

    py::list names() const {
        py::list out(next_);
        for (uint32_t s = 0; s < next_; ++s) {
            PyObject* id = ids_[s] ? ids_[s] : Py_None;
            Py_INCREF(id);
            PyList_SET_ITEM(out.ptr(), s, id);
        }
        return out;
    }

    py::tuple coords(const Slots& slots) const {
        const auto n = slots.size();
        const int64_t* s = slots.data();
        py::array_t<double> la(n), lo(n);
        double* pa = la.mutable_data();
        double* po = lo.mutable_data();
        for (py::ssize_t i = 0; i < n; ++i) {
            const uint32_t k = checked(s[i]);
            pa[i] = lats_[k];
            po[i] = lons_[k];
        }
        return py::make_tuple(la, lo);
    }

    Slots candidates_in_box(double minlat, double minlon, double maxlat, double maxlon) const {
        std::vector<uint32_t> found;
        candidates(minlat, minlon, maxlat, maxlon, found);
        return to_array(found);
    }

    Slots slots_in_box(double minlat, double minlon, double maxlat, double maxlon) const {
        std::vector<uint32_t> found;
        candidates(minlat, minlon, maxlat, maxlon, found);
        size_t n = 0;
        for (const uint32_t s : found) {
            const double la = lats_[s], lo = lons_[s];
            if (la >= minlat && la <= maxlat && lo >= minlon && lo <= maxlon) found[n++] = s;
        }
        found.resize(n);
        return to_array(found);
    }

    // Slots with lo < hav <= hi (lo < 0: hav <= hi) among the box's candidates, ordered by hav
    // (stable: ties keep candidate order), and their haversine terms.
    py::tuple ring(double lat, double lon, double minlat, double minlon, double maxlat, double maxlon,
                   double lo, double hi) const {
        std::vector<std::pair<double, uint32_t>> hits;
        ring_hits(lat, lon, minlat, minlon, maxlat, maxlon, lo, hi, hits, true);
        py::array_t<int64_t> slots(hits.size());
        py::array_t<double> havs(hits.size());
        int64_t* ps = slots.mutable_data();
        double* ph = havs.mutable_data();
        for (size_t i = 0; i < hits.size(); ++i) {
            ph[i] = hits[i].first;
            ps[i] = hits[i].second;
        }
        return py::make_tuple(slots, havs);
    }

    // ring()'s (haversine term, slot) pairs, ordered by term when `sort` (stable); the fast path
    // (fastpath.cpp) reads them without building arrays.
    void ring_hits(double lat, double lon, double minlat, double minlon, double maxlat, double maxlon,
                   double lo, double hi, std::vector<std::pair<double, uint32_t>>& hits, bool sort) const {
        hits.clear();
        std::vector<uint32_t> found;
        if (count_) candidates(minlat, minlon, maxlat, maxlon, found);
        const double cos_lat = std::cos(lat * RAD);
        hits.reserve(found.size());
        for (const uint32_t s : found) {
            double sp = std::sin((lats_[s] - lat) * HALF_RAD);
            sp *= sp;
            // The term is sp + (a product of non-negative factors) when both cosines are >= 0
            // (latitudes within +-90): rounding keeps it >= sp, so sp > hi rejects exactly.
            if (sp > hi && coslat_[s] >= 0 && cos_lat >= 0) continue;
            double sl = std::sin((lons_[s] - lon) * HALF_RAD);
            sl *= sl;
            double cp = coslat_[s];  // cos(lat * RAD), computed on insert
            cp *= cos_lat;
            cp *= sl;
            cp += sp;
            if (cp <= hi && (lo < 0 || cp > lo)) hits.emplace_back(cp, s);
        }
        if (sort)
            std::stable_sort(hits.begin(), hits.end(),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
    }

    PyObject* id_at(uint32_t slot) const { return ids_[slot]; }  // borrowed; live slots only
    double lat_at(uint32_t slot) const { return lats_[slot]; }
    double lon_at(uint32_t slot) const { return lons_[slot]; }

    py::object bounds() const {
        if (!count_) return py::none();
        double minlat = INFINITY, minlon = INFINITY, maxlat = -INFINITY, maxlon = -INFINITY;
        for (uint32_t s = 0; s < next_; ++s) {
            if (!ids_[s]) continue;
            minlat = std::min(minlat, lats_[s]);
            maxlat = std::max(maxlat, lats_[s]);
            minlon = std::min(minlon, lons_[s]);
            maxlon = std::max(maxlon, lons_[s]);
        }
        return py::make_tuple(minlon, minlat, maxlon, maxlat);
    }

private:
    static Py_hash_t hash(const py::str& oid) {
        const Py_hash_t h = PyObject_Hash(oid.ptr());
        if (h == -1) throw py::error_already_set();
        return h;
    }

    uint32_t checked(int64_t s) const {
        if (s < 0 || s >= static_cast<int64_t>(next_)) throw py::index_error("slot out of range");
        return static_cast<uint32_t>(s);
    }

    static Slots to_array(const std::vector<uint32_t>& found) {
        Slots out(static_cast<py::ssize_t>(found.size()));
        int64_t* p = out.mutable_data();
        for (size_t i = 0; i < found.size(); ++i) p[i] = found[i];
        return out;
    }

    // Position of `key` in the table (found) or of the empty entry where it would go.
    size_t find(PyObject* key, Py_hash_t h, bool& found) const {
        size_t i = static_cast<size_t>(h) & mask_;
        for (;;) {
            const uint32_t s = table_[i];
            if (s == EMPTY) {
                found = false;
                return i;
            }
            if (hashes_[s] == h) {
                PyObject* k = ids_[s];
                if (k == key) break;
                const int eq = PyObject_RichCompareBool(k, key, Py_EQ);
                if (eq < 0) throw py::error_already_set();
                if (eq) break;
            }
            i = (i + 1) & mask_;
        }
        found = true;
        return i;
    }

    void rehash(size_t size) {
        table_.assign(size, EMPTY);
        mask_ = size - 1;
        for (uint32_t s = 0; s < next_; ++s) {
            if (!ids_[s]) continue;
            size_t i = static_cast<size_t>(hashes_[s]) & mask_;
            while (table_[i] != EMPTY) i = (i + 1) & mask_;
            table_[i] = s;
        }
    }

    // Linear-probing deletion by backward shift: no tombstones, probe chains stay short.
    void erase(size_t i) {
        size_t j = i;
        for (;;) {
            j = (j + 1) & mask_;
            const uint32_t s = table_[j];
            if (s == EMPTY) break;
            const size_t home = static_cast<size_t>(hashes_[s]) & mask_;
            const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) {
                table_[i] = s;
                i = j;
            }
        }
        table_[i] = EMPTY;
    }

    void remove_at(size_t pos, uint32_t slot) {
        erase(pos);
        const int64_t key = key_of(cell_of(lats_[slot]), cell_of(lons_[slot]));
        auto it = cells_.find(key);
        std::vector<uint32_t>& bucket = it->second.slots;
        const uint32_t last = bucket.back();
        bucket.pop_back();
        if (last != slot) {
            const uint32_t hole = where_[slot];
            bucket[hole] = last;
            where_[last] = hole;
        } else if (bucket.empty()) {
            leave_block(it->second);
            cells_.erase(it);
        }
        PyObject* id = ids_[slot];
        ids_[slot] = nullptr;
        --count_;
        free_.push_back(slot);
        Py_DECREF(id);
    }

    void leave_block(const Cell& cell) {
        auto it = blocks_.find(block_of(cell.cy, cell.cx));
        std::vector<Cell*>& block = it->second;
        Cell* last = block.back();
        block.pop_back();
        if (last != &cell) {
            block[cell.pos] = last;
            last->pos = cell.pos;
        } else if (block.empty()) {
            blocks_.erase(it);
        }
    }

    uint32_t grow() {
        if (next_ >= MAX_SLOTS) throw std::length_error("point index is full");
        lats_.push_back(0.0);
        lons_.push_back(0.0);
        coslat_.push_back(1.0);
        ids_.push_back(nullptr);
        hashes_.push_back(0);
        where_.push_back(0);
        return next_++;
    }

    void candidates(double minlat, double minlon, double maxlat, double maxlon,
                    std::vector<uint32_t>& found) const {
        const int64_t ay = cell_of(minlat), ax = cell_of(minlon);
        const int64_t by = cell_of(maxlat), bx = cell_of(maxlon);
        const int64_t ncells = (by - ay + 1) * (bx - ax + 1);
        if (ncells > static_cast<int64_t>(cells_.size())) {
            found.reserve(count_);
            for (uint32_t s = 0; s < next_; ++s)
                if (ids_[s]) found.push_back(s);
            return;
        }
        if (ncells > FINE_PROBES) {
            std::vector<const std::vector<Cell*>*> lists;
            int64_t occupied = 0;
            const int64_t bax = ax >> COARSE_SHIFT, bwidth = (bx >> COARSE_SHIFT) - bax + 1;
            for (int64_t row = key_of(ay >> COARSE_SHIFT, bax); row < key_of(by >> COARSE_SHIFT, bax) + 1;
                 row += ROW) {
                for (int64_t bkey = row; bkey < row + bwidth; ++bkey) {
                    auto it = blocks_.find(bkey);
                    if (it == blocks_.end()) continue;
                    lists.push_back(&it->second);
                    occupied += static_cast<int64_t>(it->second.size());
                }
            }
            if (occupied < ncells) {
                for (const auto* block : lists) {
                    for (const Cell* cell : *block) {
                        if (cell->cy >= ay && cell->cy <= by && cell->cx >= ax && cell->cx <= bx)
                            found.insert(found.end(), cell->slots.begin(), cell->slots.end());
                    }
                }
                return;
            }
        }
        const int64_t width = bx - ax + 1;
        for (int64_t row = key_of(ay, ax); row < key_of(by, ax) + 1; row += ROW) {
            for (int64_t key = row; key < row + width; ++key) {
                auto it = cells_.find(key);
                if (it != cells_.end())
                    found.insert(found.end(), it->second.slots.begin(), it->second.slots.end());
            }
        }
    }

    std::vector<double> lats_, lons_, coslat_;
    std::vector<PyObject*> ids_;  // owned references; nullptr for a free slot
    std::vector<Py_hash_t> hashes_;
    std::vector<uint32_t> where_;
    std::unordered_map<int64_t, Cell> cells_;
    std::unordered_map<int64_t, std::vector<Cell*>> blocks_;
    std::vector<uint32_t> free_;
    std::vector<uint32_t> table_;
    size_t mask_;
    uint32_t next_ = 0;
    size_t count_ = 0;
};

}  // namespace geocore
