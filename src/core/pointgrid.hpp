// geoserver._core's point index (see pointgrid.cpp for the module and the design notes);
// a header so that the fast path (fastpath.cpp) works on the same objects.

#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <type_traits>
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

// A vector of trivially copyable T whose first `Inline` values live in the object (no
// allocation: with sparse data most cells hold one point and most blocks one or two cells);
// beyond that on the heap, grown to 4, then by ~1.5x. Movable, not copyable; order is kept by
// push_back and changed only by the caller's swap-removal (at(i) = back(); pop_back()).
template <class T, uint32_t Inline>
class InlineVec {
    static_assert(std::is_trivially_copyable_v<T>);

public:
    InlineVec() = default;
    InlineVec(const InlineVec&) = delete;
    InlineVec& operator=(const InlineVec&) = delete;
    InlineVec(InlineVec&& o) noexcept : size_(o.size_), cap_(o.cap_), u_(o.u_) {
        o.size_ = 0;
        o.cap_ = Inline;
    }
    InlineVec& operator=(InlineVec&& o) noexcept {
        if (this != &o) {
            release();
            size_ = o.size_;
            cap_ = o.cap_;
            u_ = o.u_;
            o.size_ = 0;
            o.cap_ = Inline;
        }
        return *this;
    }
    ~InlineVec() { release(); }

    uint32_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    const T* begin() const { return cap_ > Inline ? u_.heap : u_.inl; }
    const T* end() const { return begin() + size_; }
    const T& operator[](uint32_t i) const { return begin()[i]; }
    T& at(uint32_t i) { return mut()[i]; }
    const T& back() const { return begin()[size_ - 1]; }
    void pop_back() { --size_; }
    void reserve_one() {  // after it, one push_back cannot fail
        if (size_ == cap_) grow();
    }
    void push_back(const T& v) {
        reserve_one();
        mut()[size_++] = v;
    }

private:
    T* mut() { return cap_ > Inline ? u_.heap : u_.inl; }
    void grow() {
        if (cap_ > (uint32_t{1} << 30)) throw std::length_error("cell is full");
        const uint32_t cap = cap_ < 4 ? 4 : cap_ + cap_ / 2;
        auto* p = static_cast<T*>(std::malloc(sizeof(T) * cap));
        if (p == nullptr) throw std::bad_alloc();
        std::memcpy(static_cast<void*>(p), begin(), sizeof(T) * size_);
        release();
        u_.heap = p;
        cap_ = cap;
    }
    void release() {
        if (cap_ > Inline) std::free(u_.heap);
    }
    uint32_t size_ = 0, cap_ = Inline;
    union U {
        T inl[Inline];
        T* heap;
    } u_{};
};

// A block's occupied cells (entries of the cell pool): 16 bytes.
using BlockCells = InlineVec<uint32_t, 2>;

// int64 key -> V (uint32, or a block's BlockCells held in place): open addressing, linear probing,
// backward-shift deletion (no tombstones), load <= 1/2. Four consecutive keys (cell or block
// columns of one row) share a group of four entries, so a row of a query box reads a few cache
// lines instead of one per key. Values move on insert and erase: hold no pointer across them.
template <class V>
class FlatMap {
public:
    FlatMap() : t_(16), mask_(15) {}

    size_t size() const { return n_; }

    const V* find(int64_t key) const {
        for (size_t i = home(key, mask_);; i = (i + 1) & mask_) {
            const Entry& e = t_[i];
            if (e.key == key) return &e.val;
            if (e.key == NONE) return nullptr;
        }
    }
    V* find(int64_t key) { return const_cast<V*>(static_cast<const FlatMap*>(this)->find(key)); }

    V& insert(int64_t key, V val) {  // key must be absent
        if ((n_ + 1) * 2 > t_.size()) rehash(t_.size() * 2);
        V& at = place(key, std::move(val));
        ++n_;
        return at;
    }

    void erase(int64_t key) {  // key must be present
        size_t i = home(key, mask_);
        while (t_[i].key != key) i = (i + 1) & mask_;
        size_t j = i;
        for (;;) {
            j = (j + 1) & mask_;
            if (t_[j].key == NONE) break;
            const size_t h = home(t_[j].key, mask_);
            const bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
            if (!stays) {
                t_[i].key = t_[j].key;
                t_[i].val = std::move(t_[j].val);
                i = j;
            }
        }
        t_[i].key = NONE;
        t_[i].val = V();
        --n_;
    }

private:
    struct Entry {
        int64_t key = NONE;
        V val{};
    };
    static constexpr int64_t NONE = std::numeric_limits<int64_t>::min();

    static size_t home(int64_t key, size_t mask) {
        const uint64_t k = static_cast<uint64_t>(key);
        const uint64_t group = ((k >> 2) * 0x9E3779B97F4A7C15ULL) >> 32;
        return static_cast<size_t>(group * 4 + (k & 3)) & mask;
    }

    V& place(int64_t key, V&& val) {
        size_t i = home(key, mask_);
        while (t_[i].key != NONE) i = (i + 1) & mask_;
        t_[i].key = key;
        t_[i].val = std::move(val);
        return t_[i].val;
    }

    void rehash(size_t size) {
        std::vector<Entry> old(size);
        old.swap(t_);
        mask_ = size - 1;
        for (Entry& e : old)
            if (e.key != NONE) place(e.key, std::move(e.val));
    }

    std::vector<Entry> t_;
    size_t mask_;
    size_t n_ = 0;
};

// One point of a cell's bucket: its coordinates (coslat = cos(lat * RAD), computed on insert) and
// its slot. 32 bytes.
struct Entry {
    double lat, lon, coslat;
    uint32_t slot;
};

// A cell's points, contiguous (a ring scan reads one array per cell), one inline: 40 bytes.
// Entry order is the bucket order the twin keeps (appends, swap-removal).
using Bucket = InlineVec<Entry, 1>;

struct Cell {
    Bucket pts;  // empty: a free entry of the pool
    int32_t cy = 0, cx = 0;  // its row and column (cell_of clamps to +-1e8)
    uint32_t pos = 0;  // its index in its block's list
};

// What the index keeps per slot: the id (an owned reference; nullptr for a free slot), its hash,
// and where its point is: the pool entry of its cell and its index in that cell's bucket.
struct Slot {
    PyObject* id;
    Py_hash_t hash;
    uint32_t cell, pos;
};

class PointGrid {
public:
    PointGrid() : table_(64, EMPTY), mask_(63) {}
    PointGrid(const PointGrid&) = delete;
    PointGrid& operator=(const PointGrid&) = delete;

    ~PointGrid() {
        for (const Slot& s : slots_) Py_XDECREF(s.id);
    }

    size_t size() const { return count_; }
    int64_t capacity() const { return next_; }
    size_t num_cells() const { return cell_index_.size(); }
    size_t num_blocks() const { return blocks_.size(); }  // occupied blocks: knn's density guess

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
            const Slot& sl = slots_[slot];
            Cell& old = cells_[sl.cell];
            if (key_of(old.cy, old.cx) == key) {  // moved within its cell
                old.pts.at(sl.pos) = Entry{lat, lon, std::cos(lat * RAD), slot};
                return;
            }
            remove_at(pos, slot);
        }
        // What can fail (allocation) comes first; at worst it leaves an empty cell (answers do
        // not change) or an unused pool entry; from taking the slot on, nothing fails.
        const uint32_t* known = cell_index_.find(key);
        const uint32_t ci = known != nullptr ? *known : new_cell(cy, cx, key);
        cells_[ci].pts.reserve_one();
        if ((count_ + 2) * 10 > table_.size() * 7) rehash(table_.size() * 2);
        if (free_.empty()) grow();
        const uint32_t slot = free_.back();
        free_.pop_back();
        Py_INCREF(oid);
        Cell& cell = cells_[ci];
        slots_[slot] = Slot{oid, h, ci, cell.pts.size()};
        cell.pts.push_back(Entry{lat, lon, std::cos(lat * RAD), slot});
        ++count_;
        pos = find(oid, h, found);
        table_[pos] = slot;
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
        const Entry& p = entry(table_[pos]);
        return py::make_tuple(p.lat, p.lon);
    }

    // (lat, lon) of an id the caller holds: false when it is not in the index.
    bool point_of(PyObject* oid, double& lat, double& lon) const {
        const Py_hash_t h = PyObject_Hash(oid);
        if (h == -1) throw py::error_already_set();
        bool found = false;
        const size_t pos = find(oid, h, found);
        if (!found) return false;
        const Entry& p = entry(table_[pos]);
        lat = p.lat;
        lon = p.lon;
        return true;
    }

    py::list ids_of(const Slots& slots) const {
        const auto n = slots.size();
        const int64_t* s = slots.data();
        py::list out(n);
        for (py::ssize_t i = 0; i < n; ++i) {
            PyObject* id = slots_[checked(s[i])].id;
            id = id ? id : Py_None;
            Py_INCREF(id);
            PyList_SET_ITEM(out.ptr(), i, id);
        }
        return out;
    }

    py::list names() const {
        py::list out(next_);
        for (uint32_t s = 0; s < next_; ++s) {
            PyObject* id = slots_[s].id ? slots_[s].id : Py_None;
            Py_INCREF(id);
            PyList_SET_ITEM(out.ptr(), s, id);
        }
        return out;
    }

    // (lats, lons) of the slots (0, 0 for a free slot: callers pass live ones).
    py::tuple coords(const Slots& slots) const {
        const auto n = slots.size();
        const int64_t* s = slots.data();
        py::array_t<double> la(n), lo(n);
        double* pa = la.mutable_data();
        double* po = lo.mutable_data();
        for (py::ssize_t i = 0; i < n; ++i) {
            const uint32_t slot = checked(s[i]);
            if (slots_[slot].id == nullptr) {
                pa[i] = po[i] = 0.0;
                continue;
            }
            const Entry& p = entry(slot);
            pa[i] = p.lat;
            po[i] = p.lon;
        }
        return py::make_tuple(la, lo);
    }

    Slots candidates_in_box(double minlat, double minlon, double maxlat, double maxlon) const {
        std::vector<uint32_t> found;
        const bool cells = each_cell(minlat, minlon, maxlat, maxlon, [&](const Cell& c) {
            for (const Entry& e : c.pts) found.push_back(e.slot);
        });
        if (!cells) all_slots(found);
        return to_array(found);
    }

    Slots slots_in_box(double minlat, double minlon, double maxlat, double maxlon) const {
        std::vector<uint32_t> found;
        auto inside = [&](const Entry& e) {
            return e.lat >= minlat && e.lat <= maxlat && e.lon >= minlon && e.lon <= maxlon;
        };
        const bool cells = each_cell(minlat, minlon, maxlat, maxlon, [&](const Cell& c) {
            for (const Entry& e : c.pts)
                if (inside(e)) found.push_back(e.slot);
        });
        if (!cells) {  // every live slot, in slot order: mark them cell by cell, then read the marks
            std::vector<uint8_t> mark(next_, 0);
            for (const Cell& c : cells_)
                for (const Entry& e : c.pts)
                    if (inside(e)) mark[e.slot] = 1;
            for (uint32_t s = 0; s < next_; ++s)
                if (mark[s]) found.push_back(s);
        }
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

    // ring()'s (haversine term, slot) pairs, ordered by term when `sort` (stable over the
    // candidate order); unsorted, they come in storage order. The fast path (fastpath.cpp) reads
    // them without building arrays. When sorting, the first hits' slot records and id objects
    // are prefetched: the caller reads them next, and each is a cache miss on a big collection.
    void ring_hits(double lat, double lon, double minlat, double minlon, double maxlat, double maxlon,
                   double lo, double hi, std::vector<std::pair<double, uint32_t>>& hits, bool sort) const {
        hits.clear();
        if (!count_) return;
        const double cos_lat = std::cos(lat * RAD);
        const size_t ahead = sort ? PREFETCH_IDS : 0;
        auto scan = [&](const Cell& c) {
            for (const Entry& p : c.pts) {
                double sp = std::sin((p.lat - lat) * HALF_RAD);
                sp *= sp;
                // The term is sp + (a product of non-negative factors) when both cosines are >= 0
                // (latitudes within +-90): rounding keeps it >= sp, so sp > hi rejects exactly.
                if (sp > hi && p.coslat >= 0 && cos_lat >= 0) continue;
                double sl = std::sin((p.lon - lon) * HALF_RAD);
                sl *= sl;
                double cp = p.coslat;
                cp *= cos_lat;
                cp *= sl;
                cp += sp;
                if (cp <= hi && (lo < 0 || cp > lo)) {
                    const size_t n = hits.size();
                    if (n < ahead) {  // this hit's slot record; the id of the hit LAG before, whose
                        __builtin_prefetch(&slots_[p.slot]);  // record should be here by now
                        if (n >= LAG) prefetch_id(hits[n - LAG].second);
                    }
                    hits.emplace_back(cp, p.slot);
                }
            }
        };
        const bool cells = each_cell(minlat, minlon, maxlat, maxlon, scan);
        if (!cells)  // every live slot: read in storage order, sorted as if read in slot order
            for (const Cell& c : cells_) scan(c);
        if (!sort) return;
        if (cells && hits.size() <= INSERTION_SORT) {  // stable: an entry passes only greater terms
            for (size_t i = 1; i < hits.size(); ++i) {
                const auto x = hits[i];
                size_t j = i;
                for (; j > 0 && x.first < hits[j - 1].first; --j) hits[j] = hits[j - 1];
                hits[j] = x;
            }
        } else if (cells)
            std::stable_sort(hits.begin(), hits.end(),
                             [](const auto& a, const auto& b) { return a.first < b.first; });
        else  // a stable sort of the slot-ordered hits by term = a sort by (term, slot)
            std::sort(hits.begin(), hits.end());
        const size_t m = std::min(hits.size(), PREFETCH_IDS);  // the rest (most are here already)
        for (size_t k = 0; k < m; ++k) prefetch_id(hits[k].second);
    }

    PyObject* id_at(uint32_t slot) const { return slots_[slot].id; }  // borrowed; live slots only
    double lat_at(uint32_t slot) const { return entry(slot).lat; }  // live slots only
    double lon_at(uint32_t slot) const { return entry(slot).lon; }

    py::object bounds() const {
        if (!count_) return py::none();
        double minlat = INFINITY, minlon = INFINITY, maxlat = -INFINITY, maxlon = -INFINITY;
        for (const Cell& c : cells_) {
            for (const Entry& p : c.pts) {
                minlat = std::min(minlat, p.lat);
                maxlat = std::max(maxlat, p.lat);
                minlon = std::min(minlon, p.lon);
                maxlon = std::max(maxlon, p.lon);
            }
        }
        return py::make_tuple(minlon, minlat, maxlon, maxlat);
    }

private:
    static constexpr size_t PREFETCH_IDS = 128;  // ring_hits: hits whose slot and id are prefetched
    static constexpr size_t LAG = 8;
    static constexpr size_t INSERTION_SORT = 64;  // ring_hits: fewer hits are sorted by insertion  // ring_hits: hits between a slot's record and its id object
    static constexpr size_t CELL_BATCH = 16;  // each_cell: cells probed before their points are read
    static constexpr uint32_t CELL_HEAD = 12;  // each_cell: a cell's first points asked for (6 lines)

    static Py_hash_t hash(const py::str& oid) {
        const Py_hash_t h = PyObject_Hash(oid.ptr());
        if (h == -1) throw py::error_already_set();
        return h;
    }

    uint32_t checked(int64_t s) const {
        if (s < 0 || s >= static_cast<int64_t>(next_)) throw py::index_error("slot out of range");
        return static_cast<uint32_t>(s);
    }

    void prefetch_id(uint32_t slot) const {  // a str's length and state, then its first characters
        const char* id = reinterpret_cast<const char*>(slots_[slot].id);
        __builtin_prefetch(id + 16);
        __builtin_prefetch(id + 56);
    }

    const Entry& entry(uint32_t slot) const {  // a live slot's point
        const Slot& s = slots_[slot];
        return cells_[s.cell].pts[s.pos];
    }

    static Slots to_array(const std::vector<uint32_t>& found) {
        Slots out(static_cast<py::ssize_t>(found.size()));
        int64_t* p = out.mutable_data();
        for (size_t i = 0; i < found.size(); ++i) p[i] = found[i];
        return out;
    }

    void all_slots(std::vector<uint32_t>& found) const {
        found.reserve(count_);
        for (uint32_t s = 0; s < next_; ++s)
            if (slots_[s].id) found.push_back(s);
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
            const Slot& sl = slots_[s];
            if (sl.hash == h) {
                PyObject* k = sl.id;
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
            if (!slots_[s].id) continue;
            size_t i = static_cast<size_t>(slots_[s].hash) & mask_;
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
            const size_t home = static_cast<size_t>(slots_[s].hash) & mask_;
            const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (!stays) {
                table_[i] = s;
                i = j;
            }
        }
        table_[i] = EMPTY;
    }

    // A new (empty) cell entered in the cell index and its block's list; its pool index. A
    // failure (allocation) leaves at most an empty block list or an unused pool entry.
    uint32_t new_cell(int64_t cy, int64_t cx, int64_t key) {
        const int64_t bkey = block_of(cy, cx);
        BlockCells* block = blocks_.find(bkey);
        if (block == nullptr) block = &blocks_.insert(bkey, BlockCells());
        block->reserve_one();
        const uint32_t ci = take(cells_, cell_free_);
        cell_index_.insert(key, ci);  // another map: `block` stays valid
        Cell& cell = cells_[ci];
        cell.cy = static_cast<int32_t>(cy);
        cell.cx = static_cast<int32_t>(cx);
        cell.pos = block->size();
        block->push_back(ci);
        return ci;
    }

    // A free entry of a pool (the last freed, else a new one at the end). `free` keeps the
    // pool's capacity, so returning an entry to it never fails.
    template <class T>
    static uint32_t take(std::vector<T>& pool, std::vector<uint32_t>& free) {
        if (!free.empty()) {
            const uint32_t i = free.back();
            free.pop_back();
            return i;
        }
        if (pool.size() >= MAX_SLOTS) throw std::length_error("point index is full");
        if (pool.size() == pool.capacity()) {
            const size_t cap = std::max<size_t>(16, pool.capacity() * 2);
            free.reserve(cap);
            pool.reserve(cap);
        }
        pool.emplace_back();
        return static_cast<uint32_t>(pool.size() - 1);
    }

    void remove_at(size_t pos, uint32_t slot) {
        erase(pos);
        Slot& sl = slots_[slot];
        const uint32_t ci = sl.cell;
        Bucket& bucket = cells_[ci].pts;
        const Entry last = bucket.back();
        bucket.pop_back();
        if (last.slot != slot) {
            bucket.at(sl.pos) = last;
            slots_[last.slot].pos = sl.pos;
        } else if (bucket.empty()) {
            leave_block(ci);
            cell_index_.erase(key_of(cells_[ci].cy, cells_[ci].cx));
            cells_[ci].pts = Bucket();  // frees a heap buffer
            cell_free_.push_back(ci);
        }
        PyObject* id = sl.id;
        sl.id = nullptr;
        --count_;
        free_.push_back(slot);
        Py_DECREF(id);
    }

    void leave_block(uint32_t ci) {
        const Cell& cell = cells_[ci];
        const int64_t bkey = block_of(cell.cy, cell.cx);
        BlockCells& block = *blocks_.find(bkey);
        const uint32_t last = block.back();
        block.pop_back();
        if (last != ci) {
            block.at(cell.pos) = last;
            cells_[last].pos = cell.pos;
        } else if (block.empty()) {
            blocks_.erase(bkey);
        }
    }

    // A new slot, on the free list. Its record (and the free list) grow first, together.
    void grow() {
        if (next_ >= MAX_SLOTS) throw std::length_error("point index is full");
        if (next_ == slots_.capacity()) {
            const size_t cap = std::max<size_t>(64, slots_.capacity() * 2);
            slots_.reserve(cap);
            free_.reserve(cap);
        }
        slots_.push_back(Slot{nullptr, 0, 0, 0});
        free_.push_back(next_++);
    }

    // Calls f(cell) for each occupied cell whose points are the box's candidates, in candidate
    // order; false (no call) when the box covers more cells than are occupied: then every live
    // slot is a candidate, in slot order. The rules are the twin's (index.py candidates_in_box).
    template <class F>
    bool each_cell(double minlat, double minlon, double maxlat, double maxlon, F&& f) const {
        const int64_t ay = cell_of(minlat), ax = cell_of(minlon);
        const int64_t by = cell_of(maxlat), bx = cell_of(maxlon);
        const int64_t ncells = (by - ay + 1) * (bx - ax + 1);
        if (ncells > static_cast<int64_t>(cell_index_.size())) return false;
        if (ncells > FINE_PROBES) {
            std::vector<const BlockCells*> lists;
            int64_t occupied = 0;
            const int64_t bax = ax >> COARSE_SHIFT, bwidth = (bx >> COARSE_SHIFT) - bax + 1;
            for (int64_t row = key_of(ay >> COARSE_SHIFT, bax); row < key_of(by >> COARSE_SHIFT, bax) + 1;
                 row += ROW) {
                for (int64_t bkey = row; bkey < row + bwidth; ++bkey) {
                    const BlockCells* block = blocks_.find(bkey);
                    if (block == nullptr) continue;
                    lists.push_back(block);
                    occupied += static_cast<int64_t>(block->size());
                }
            }
            if (occupied < ncells) {
                for (const BlockCells* block : lists) {
                    for (const uint32_t ci : *block) {
                        const Cell& cell = cells_[ci];
                        if (cell.cy >= ay && cell.cy <= by && cell.cx >= ax && cell.cx <= bx) f(cell);
                    }
                }
                return true;
            }
        }
        // Probe the cells in batches: a batch's cell records, then their first points, are
        // asked for before the first is read, so the cache misses overlap.
        uint32_t batch[CELL_BATCH];
        size_t nb = 0;
        auto flush = [&] {
            for (size_t i = 0; i < nb; ++i) {
                const Bucket& pts = cells_[batch[i]].pts;
                const Entry* p = pts.begin();
                for (uint32_t k = 0; k < pts.size() && k < CELL_HEAD; k += 2) __builtin_prefetch(p + k);
            }
            for (size_t i = 0; i < nb; ++i) f(cells_[batch[i]]);
            nb = 0;
        };
        const int64_t width = bx - ax + 1;
        for (int64_t row = key_of(ay, ax); row < key_of(by, ax) + 1; row += ROW) {
            for (int64_t key = row; key < row + width; ++key) {
                const uint32_t* ci = cell_index_.find(key);
                if (ci == nullptr) continue;
                __builtin_prefetch(&cells_[*ci]);
                batch[nb++] = *ci;
                if (nb == CELL_BATCH) flush();
            }
        }
        flush();
        return true;
    }

    std::vector<Slot> slots_;  // by slot
    std::vector<Cell> cells_;  // a pool: entries listed in cell_free_ are unused
    std::vector<uint32_t> cell_free_;
    FlatMap<uint32_t> cell_index_;  // cell key -> its entry in cells_
    FlatMap<BlockCells> blocks_;  // block key -> its occupied cells (entries of cells_)
    std::vector<uint32_t> free_;
    std::vector<uint32_t> table_;  // id -> slot (open addressing over slots_' hashes)
    size_t mask_;
    uint32_t next_ = 0;
    size_t count_ = 0;
};

}  // namespace geocore
