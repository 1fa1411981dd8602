// geoserver._core.execute_batch: the compiled fast path for whole commands (issue 15).
//
// Given a connection's buffered request bytes, parse complete RESP arrays and execute the
// simplest hot forms entirely here, stopping at the first request that is not one of them (or
// is not complete, or is not canonical RESP): the caller (geoserver/fastpath.py) hands
// everything from there to the normal Python path unchanged. Handled forms:
//
//   PING [message]                                  (mode PING)
//   GET key id [POINT]   a plain point or a miss    (mode READ)
//   SET key id POINT lat lon   into a collection that exists, over nothing or a plain point
//                                                   (mode WRITE)
//   SET key id FIELD name value [FIELD ...] POINT lat lon   up to MAX_FIELDS non-zero numbers,
//                        over nothing, a plain point or a point Item without expiry (mode WRITE)
//   FSET key id [XX] name value [name value ...]   up to MAX_FIELDS non-zero numbers, of a
//                        plain point or an Item without expiry (mode WRITE)
//   DEL key id           of a plain point (not a collection's last object) or a miss (mode WRITE)
//   NEARBY key [LIMIT n] [IDS|COUNT|OBJECTS|POINTS] POINT lat lon meters   over points only
//   SCAN key [LIMIT n] [IDS|COUNT|OBJECTS|POINTS]   (mode SEARCH: reads, and no expiry due;
//                                                   OBJECTS/POINTS rows only of plain points)
//
// Every answer is the byte string the Python path renders in RESP output mode (JSON output is
// left to Python), every SET's AOF record is its request bytes, which for canonical RESP (no
// leading zeros, `$` bulks only: checked here) are exactly encode_command(argv). Anything the
// Python path would answer with an error (bad numbers, a latitude out of range, arity), any
// other object (expiry, z, other geometries; fields except as above) and any number this file does not
// format exactly like Python (|v| < 1e-4) stops the batch before that request. The caller
// decides which modes the server's state allows (auth, loading, the write gate, fences,
// MONITOR, sliced writes); see fastpath.py.
//
// The store is Python's: db.collections (a dict subclass) of Collection objects whose `items`
// (a SortedDict of id -> PLAIN | Item) and `points` (PointGrid) are updated as Collection.set
// does for a point (a new id appended to the id order's `_pending` list, which IdList merges in
// on its next ordered read; dict store of PLAIN, or of an Item built from collection.STORE_KINDS'
// types with the merged fields; index insert; weight).
// Runs under the GIL.

#include "pointgrid.hpp"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

namespace py = pybind11;

namespace geocore {
namespace {

constexpr int MAX_FIELDS = 8;  // SET's FIELD pairs, FSET's pairs run here (more: Python)
constexpr int MAX_ARGS = 6 + 3 * MAX_FIELDS;
constexpr size_t LONGEST_HEADER = 24;  // `*` or `$`, up to 20 digits, CRLF (as framing.py)

enum Mode : int { PING = 1, READ = 2, WRITE = 4, RECORD = 8, REPLAY = 16, SEARCH = 32, JSON = 64 };
enum Cmd : int { C_PING = 0, C_SET = 1, C_GET = 2, C_NEARBY = 3, C_SCAN = 4, C_DEL = 5, C_FSET = 6, N_CMDS = 7 };

// New ids waiting for the id order at which IdList merges them (store/collection.py reads it as
// _core.MERGE_IDS_AT): ~1 ms of SortedList inserts, so no merge holds the loop for long.
constexpr Py_ssize_t MERGE_IDS_AT = 1024;
constexpr long long SLICE = 10000;  // commands/slices.py SLICE: bigger NEARBY IDS replies run sliced
constexpr double EARTH_RADIUS_M = 6371e3;  // store/geometry.py
constexpr double HALF_EARTH_M = M_PI * EARTH_RADIUS_M;  // store/query.py
constexpr double TO_DEG = 180.0 / M_PI;  // math.degrees
constexpr double TO_RAD = M_PI / 180.0;  // math.radians

struct Arg {
    const char* p;
    size_t n;
};

struct Limits {
    size_t max_args, max_bulk, max_request;
};

// A decimal length after `*` / `$`, up to CRLF: canonical digits only (no sign, no leading zero).
// False: incomplete or not canonical (either way Python's framing takes it from here).
bool read_len(const char* buf, size_t& p, size_t end, uint64_t& out) {
    const size_t start = p;
    uint64_t v = 0;
    while (p < end && buf[p] >= '0' && buf[p] <= '9') {
        if (p - start >= 18) return false;
        v = v * 10 + static_cast<uint64_t>(buf[p] - '0');
        ++p;
    }
    const size_t digits = p - start;
    if (digits == 0 || (digits > 1 && buf[start] == '0')) return false;
    if (end - p < 2 || buf[p] != '\r' || buf[p + 1] != '\n') return false;
    p += 2;
    out = v;
    return true;
}

// One canonical RESP array of at most MAX_ARGS bulk strings at buf[pos..end), within the limits.
bool parse_request(const char* buf, size_t pos, size_t end, const Limits& lim, Arg* args, int& argc,
                   size_t& next) {
    size_t p = pos;
    if (p >= end || buf[p] != '*') return false;
    ++p;
    uint64_t count;
    if (!read_len(buf, p, end, count)) return false;
    if (count < 1 || count > MAX_ARGS || count > lim.max_args) return false;
    for (uint64_t i = 0; i < count; ++i) {
        if (p >= end || buf[p] != '$') return false;
        ++p;
        uint64_t len;
        if (!read_len(buf, p, end, len)) return false;
        if (len > lim.max_bulk || end - p < len + 2) return false;
        if (buf[p + len] != '\r' || buf[p + len + 1] != '\n') return false;
        args[i] = {buf + p, static_cast<size_t>(len)};
        p += len + 2;
    }
    if (p - pos > lim.max_request) return false;
    argc = static_cast<int>(count);
    next = p;
    return true;
}

bool ieq(const Arg& a, const char* word) {
    const size_t n = std::strlen(word);
    if (a.n != n) return false;
    for (size_t i = 0; i < n; ++i) {
        char c = a.p[i];
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
        if (c != word[i]) return false;
    }
    return true;
}

// Moves q past an exponent `[eE][+-]?[0-9]+` when one starts there; false for an `e` without
// digits (the number's form is then not one Python reads as this file does).
bool skip_exponent(const char*& q, const char* e) {
    if (q == e || (*q != 'e' && *q != 'E')) return true;
    ++q;
    if (q < e && (*q == '+' || *q == '-')) ++q;
    const char* exp = q;
    while (q < e && *q >= '0' && *q <= '9') ++q;
    return q != exp;
}

// float(token) for the plain decimal forms ([+-]digits[.digits][e[+-]digits]), finite only;
// anything else (spaces, `_`, inf, nan, hex) is left to Python's parse_float.
bool parse_num(const Arg& a, double& out) {
    if (a.n == 0 || a.n > 64) return false;
    const char* s = a.p;
    const char* e = a.p + a.n;
    const char* q = s;
    if (*q == '+' || *q == '-') ++q;
    const char* digits = q;
    while (q < e && *q >= '0' && *q <= '9') ++q;
    size_t mantissa = static_cast<size_t>(q - digits);
    if (q < e && *q == '.') {
        ++q;
        const char* frac = q;
        while (q < e && *q >= '0' && *q <= '9') ++q;
        mantissa += static_cast<size_t>(q - frac);
    }
    if (mantissa == 0) return false;
    if (!skip_exponent(q, e) || q != e) return false;
    const char* from = *s == '+' ? s + 1 : s;  // from_chars takes no '+'
    const auto r = std::from_chars(from, e, out, std::chars_format::general);
    if (r.ec != std::errc() || r.ptr != e) return false;
    return std::isfinite(out);
}

// A coordinate as Python prints it in these replies (format_float for RESP POINT, orjson of
// num() for the GeoJSON text): integral values as integers, others as the shortest round-trip
// digits in fixed notation. False for |v| < 1e-4 (exponent forms, where the two differ).
bool put_num(std::string& out, double v) {
    char tmp[64];
    std::to_chars_result r;
    if (v == 0) {
        out += '0';
        return true;
    }
    if (std::floor(v) == v && std::fabs(v) < 1e16) {
        r = std::to_chars(tmp, tmp + sizeof tmp, static_cast<long long>(v));
    } else {
        if (std::fabs(v) < 1e-4) return false;
        r = std::to_chars(tmp, tmp + sizeof tmp, v, std::chars_format::fixed);
    }
    if (r.ec != std::errc()) return false;
    out.append(tmp, r.ptr);
    return true;
}

void put_bulk(std::string& out, const char* p, size_t n) {
    char tmp[32];
    out += '$';
    const auto r = std::to_chars(tmp, tmp + sizeof tmp, n);
    out.append(tmp, r.ptr);
    out += "\r\n";
    out.append(p, n);
    out += "\r\n";
}

// A str for a key or id, byte-exact as geoserver.binary.text makes it.
PyObject* text(const Arg& a) {
    return PyUnicode_DecodeUTF8(a.p, static_cast<Py_ssize_t>(a.n), "surrogateescape");
}

// Attribute names, interned once (the module holds them for the life of the process).
PyObject* name_of(const char* s) {
    PyObject* n = PyUnicode_InternFromString(s);
    if (n == nullptr) throw py::error_already_set();
    return n;
}
struct Names {
    PyObject *items, *points, *shapes, *weight, *pending, *merge_pending, *list_remove;
    PyObject *obj, *fields, *expires_at, *kind, *z, *point;  // an Item's and a GeoObject's; "point"
};
Names N{};

// The store's Python types (store/collection.py STORE_KINDS): the marker of a compact plain
// point, Item (a value with fields, expiry or another geometry) and GeoObject.
struct Kinds {
    PyObject *plain, *item, *geo;

    explicit Kinds(py::handle t) {
        if (!PyTuple_Check(t.ptr()) || PyTuple_GET_SIZE(t.ptr()) != 3 || !PyType_Check(PyTuple_GET_ITEM(t.ptr(), 1)) ||
            !PyType_Check(PyTuple_GET_ITEM(t.ptr(), 2)))
            throw py::type_error("kinds must be collection.STORE_KINDS: (PLAIN, Item, GeoObject)");
        plain = PyTuple_GET_ITEM(t.ptr(), 0);
        item = PyTuple_GET_ITEM(t.ptr(), 1);
        geo = PyTuple_GET_ITEM(t.ptr(), 2);
    }
};

// The collection of the last key seen, with owned references, and its pending weight change.
struct Col {
    std::string key;
    bool valid = false;
    bool exists = false;  // the key names a collection (col may still be nullptr: not ours to run)
    Py_ssize_t shapes = -1;  // len(col.shapes) once asked (num_shapes): NEARBY runs only over points
    PyObject* col = nullptr;  // nullptr: no such collection
    PyObject* items = nullptr;
    PyObject* pending = nullptr;  // items._pending (IdList's new ids, merged into the order lazily)
    PyObject* list_remove = nullptr;  // items._list_remove (the id order's removal), on first use
    PointGrid* grid = nullptr;  // nullptr: not the compiled index (then nothing runs here)
    long long weight = 0;

    ~Col() { release(); }

    bool release() {  // applies the weight change; false when that failed
        bool ok = true;
        if (col != nullptr && weight != 0) {
            PyObject* w = PyObject_GetAttr(col, N.weight);
            PyObject* sum = nullptr;
            if (w != nullptr) {
                PyObject* d = PyLong_FromLongLong(weight);
                sum = d ? PyNumber_Add(w, d) : nullptr;
                Py_XDECREF(d);
            }
            ok = sum != nullptr && PyObject_SetAttr(col, N.weight, sum) == 0;
            Py_XDECREF(w);
            Py_XDECREF(sum);
            if (!ok) PyErr_Clear();
        }
        weight = 0;
        Py_CLEAR(col);
        Py_CLEAR(items);
        Py_CLEAR(pending);
        Py_CLEAR(list_remove);
        grid = nullptr;
        valid = exists = false;
        shapes = -1;
        return ok;
    }

    // Look the key up (cached while it repeats); false on a Python error.
    bool open(PyObject* collections, const Arg& k) {
        if (valid && key.size() == k.n && std::memcmp(key.data(), k.p, k.n) == 0) return true;
        release();
        PyObject* name = text(k);
        if (name == nullptr) return false;
        PyObject* c = PyDict_GetItemWithError(collections, name);  // borrowed
        Py_DECREF(name);
        if (c == nullptr && PyErr_Occurred()) return false;
        key.assign(k.p, k.n);
        valid = true;
        if (c == nullptr) return true;
        exists = true;
        items = PyObject_GetAttr(c, N.items);
        PyObject* points = items ? PyObject_GetAttr(c, N.points) : nullptr;
        if (points == nullptr) {
            Py_CLEAR(items);
            valid = false;
            return false;
        }
        static PyTypeObject* grid_type = reinterpret_cast<PyTypeObject*>(py::type::of<PointGrid>().ptr());
        if (Py_TYPE(points) == grid_type && PyDict_Check(items)) {
            grid = py::handle(points).cast<PointGrid*>();
            Py_INCREF(c);
            col = c;
        } else {
            Py_CLEAR(items);
        }
        Py_DECREF(points);  // the collection keeps it alive
        return true;
    }

    // len(col.shapes) of the open collection (-1: a Python error).
    Py_ssize_t num_shapes() {
        if (shapes < 0 && col != nullptr) {
            PyObject* boxes = PyObject_GetAttr(col, N.shapes);
            shapes = boxes ? PyObject_Length(boxes) : -1;
            Py_XDECREF(boxes);
        }
        return shapes;
    }
};

// metrics.CoreCounts' bytearray, which the core adds to per request (no Python per request):
// int64 [nb, nb bucket bounds in ns, then per command: count, total ns, nb + 1 histogram buckets].
struct Counts {
    const int64_t* bounds = nullptr;
    int64_t nb = 0;
    int64_t* rows = nullptr;  // nullptr: not counted (AOF replay)

    bool attach(PyObject* buf) {
        if (!PyByteArray_Check(buf)) return false;
        const size_t size = static_cast<size_t>(PyByteArray_GET_SIZE(buf));
        if (size < sizeof(int64_t)) return false;
        int64_t* all = reinterpret_cast<int64_t*>(PyByteArray_AS_STRING(buf));
        nb = all[0];
        if (nb < 0 || nb > 64 || size != sizeof(int64_t) * static_cast<size_t>(1 + nb + (nb + 3) * N_CMDS))
            return false;
        bounds = all + 1;
        rows = all + 1 + nb;
        return true;
    }

    void add(int cmd, int64_t ns) {
        if (rows == nullptr) return;
        int64_t* row = rows + cmd * (nb + 3);
        row[0] += 1;
        row[1] += ns;
        row[2 + (std::lower_bound(bounds, bounds + nb, ns) - bounds)] += 1;  // bisect_left
    }
};

enum Outcome { DONE, STOP };

// A LIMIT count as Python's int() reads the plain forms (digits, no leading zero), >= 1.
bool parse_count(const Arg& a, long long& out) {
    if (a.n == 0 || a.n > 9 || a.p[0] == '0') return false;
    long long v = 0;
    for (size_t i = 0; i < a.n; ++i) {
        if (a.p[i] < '0' || a.p[i] > '9') return false;
        v = v * 10 + (a.p[i] - '0');
    }
    out = v;
    return true;
}

// Python's `x ** 2` is C pow(x, 2.0); the volatile keeps the compiler from making it x * x.
double squared(double x) {
    volatile double two = 2.0;
    return std::pow(x, two);
}

double hav_of(double meters) {  // store/query.py _hav_of
    return squared(std::sin(std::min(meters / EARTH_RADIUS_M, M_PI) / 2));
}

// store/geometry.py circle_bbox, then store/query.py _grid_box: (minlat, minlon, maxlat, maxlon).
void circle_box(double lat, double lon, double meters, double box[4]) {
    const double dlat = (meters / EARTH_RADIUS_M) * TO_DEG;
    const double minlat = std::max(-90.0, lat - dlat), maxlat = std::min(90.0, lat + dlat);
    box[0] = minlat;
    box[2] = maxlat;
    box[1] = -180.0;
    box[3] = 180.0;
    if (minlat <= -90.0 || maxlat >= 90.0) return;
    const double coslat = std::min(std::cos(minlat * TO_RAD), std::cos(maxlat * TO_RAD));
    const double dlon = (meters / (EARTH_RADIUS_M * std::max(coslat, 1e-12))) * TO_DEG;
    if (dlon >= 180.0) return;
    const double minlon = lon - dlon, maxlon = lon + dlon;
    if (minlon < -180.0 || maxlon > 180.0) return;
    box[1] = minlon;
    box[3] = maxlon;
}

// output.py elapsed_text (Go's Duration.String for short durations): 850ns, 23.1µs, 1.2ms, 2.5s.
void put_elapsed(std::string& out, long long ns) {
    char tmp[64];
    if (ns < 1000) {
        const auto r = std::to_chars(tmp, tmp + sizeof tmp, ns < 0 ? 0 : ns);
        out.append(tmp, r.ptr);
        out += "ns";
        return;
    }
    const char* unit = "s";
    int n = 0;
    if (ns < 1000LL * 1000)
        n = std::snprintf(tmp, sizeof tmp, "%.3f", static_cast<double>(ns) / 1e3), unit = "\xc2\xb5s";
    else if (ns < 1000LL * 1000000)
        n = std::snprintf(tmp, sizeof tmp, "%.3f", static_cast<double>(ns) / 1e6), unit = "ms";
    else
        n = std::snprintf(tmp, sizeof tmp, "%.6f", static_cast<double>(ns) / 1e9);
    while (n > 0 && tmp[n - 1] == '0') --n;  // rstrip("0").rstrip(".")
    if (n > 0 && tmp[n - 1] == '.') --n;
    out.append(tmp, static_cast<size_t>(n));
    out += unit;
}

void put_plain_int(std::string& out, long long v) {
    char tmp[32];
    const auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
    out.append(tmp, r.ptr);
}

void put_int(std::string& out, char kind, long long v) {
    char tmp[32];
    out += kind;
    const auto r = std::to_chars(tmp, tmp + sizeof tmp, v);
    out.append(tmp, r.ptr);
    out += "\r\n";
}

// A str id as its exact bytes (geoserver.binary.raw), as a bulk string.
bool put_id(std::string& out, PyObject* id) {
    if (PyUnicode_IS_ASCII(id)) {
        put_bulk(out, static_cast<const char*>(PyUnicode_DATA(id)),
                 static_cast<size_t>(PyUnicode_GET_LENGTH(id)));
        return true;
    }
    PyObject* b = PyUnicode_AsEncodedString(id, "utf-8", "surrogateescape");
    if (b == nullptr) return false;
    put_bulk(out, PyBytes_AS_STRING(b), static_cast<size_t>(PyBytes_GET_SIZE(b)));
    Py_DECREF(b);
    return true;
}

enum Output { IDS, COUNT, OBJECTS, POINTS };

// `[LIMIT n] [IDS|COUNT|OBJECTS]` from a[i] on (search.py parse_options in the order it accepts
// them; OBJECTS when no output word is given); false for a bad count.
bool parse_head(const Arg* a, int argc, int& i, long long& limit, Output& output) {
    if (i + 1 < argc && ieq(a[i], "LIMIT")) {
        if (!parse_count(a[i + 1], limit)) return false;
        i += 2;
    }
    if (i < argc) {
        if (ieq(a[i], "IDS")) {
            output = IDS;
            ++i;
        } else if (ieq(a[i], "COUNT")) {
            output = COUNT;
            ++i;
        } else if (ieq(a[i], "OBJECTS")) {
            output = OBJECTS;
            ++i;
        } else if (ieq(a[i], "POINTS")) {
            output = POINTS;
            ++i;
        }
    }
    return true;
}

// One OBJECTS row of a plain point: [id, its GeoJSON text] (search.py _resp_row, json_text).
// A plain point's GeoJSON text (GeoObject.json_text), and its JSON `{"lat":..,"lon":..}`
// (replies.point_json): the two renderings every reply of a point is made of.
bool put_geojson(std::string& out, double lat, double lon) {
    out += "{\"type\":\"Point\",\"coordinates\":[";
    if (!put_num(out, lon)) return false;
    out += ',';
    if (!put_num(out, lat)) return false;
    out += "]}";
    return true;
}

bool put_latlon(std::string& out, double lat, double lon) {
    out += "{\"lat\":";
    if (!put_num(out, lat)) return false;
    out += ",\"lon\":";
    if (!put_num(out, lon)) return false;
    out += '}';
    return true;
}

bool put_object_row(std::string& out, PyObject* id, double lat, double lon) {
    std::string body;
    if (!put_geojson(body, lat, lon)) return false;
    out += "*2\r\n";
    if (!put_id(out, id)) return false;
    put_bulk(out, body.data(), body.size());
    return true;
}

// One POINTS row of a plain point: [id, [lat, lon]] (search.py's point rows, format_float).
bool put_point_row(std::string& out, PyObject* id, double lat, double lon) {
    std::string la, lo;
    if (!put_num(la, lat) || !put_num(lo, lon)) return false;
    out += "*2\r\n";
    if (!put_id(out, id)) return false;
    out += "*2\r\n";
    put_bulk(out, la.data(), la.size());
    put_bulk(out, lo.data(), lo.size());
    return true;
}

bool put_row(std::string& out, Output output, PyObject* id, double lat, double lon) {
    return output == POINTS ? put_point_row(out, id, lat, lon) : put_object_row(out, id, lat, lon);
}

// A JSON string of an id orjson writes as is: printable ASCII without `"` or `\` (any other id
// stops the request: Python escapes it).
bool put_json_id(std::string& out, PyObject* id) {
    if (!PyUnicode_IS_ASCII(id)) return false;
    const char* p = static_cast<const char*>(PyUnicode_DATA(id));
    const Py_ssize_t n = PyUnicode_GET_LENGTH(id);
    for (Py_ssize_t k = 0; k < n; ++k)
        if (p[k] < 0x20 || p[k] == 0x7f || p[k] == '"' || p[k] == '\\') return false;
    out += '"';
    out.append(p, static_cast<size_t>(n));
    out += '"';
    return true;
}

// The rows of a search reply (not COUNT): RESP `[cursor, [row ...]]` or, in JSON output,
// search.py _reply_json's members `"ids"|"objects"|"points":[...],"count":n,"cursor":c` of plain
// points (no fields: no "fields" member).
struct Rows {
    bool json;
    Output output;
    std::string body;
    long long n = 0;

    bool add(PyObject* id, double lat, double lon) {
        if (!json) {
            ++n;
            return output == IDS ? put_id(body, id) : put_row(body, output, id, lat, lon);
        }
        if (n++) body += ',';
        if (output == IDS) return put_json_id(body, id);
        body += "{\"id\":";
        if (!put_json_id(body, id)) return false;
        body += output == OBJECTS ? ",\"object\":" : ",\"point\":";
        if (!(output == OBJECTS ? put_geojson(body, lat, lon) : put_latlon(body, lat, lon))) return false;
        body += '}';
        return true;
    }

    void finish(std::string& out, long long cursor) const {
        if (!json) {
            out += "*2\r\n";
            put_int(out, ':', cursor);
            put_int(out, '*', n);
            out += body;
            return;
        }
        out += output == IDS ? ",\"ids\":[" : output == OBJECTS ? ",\"objects\":[" : ",\"points\":[";
        out += body;
        out += "],\"count\":";
        put_plain_int(out, n);
        out += ",\"cursor\":";
        put_plain_int(out, cursor);
    }
};

// COUNT's reply: `:n`, or in JSON `"count":n,"cursor":0` (a count's cursor is always 0).
void put_count(std::string& out, bool json, long long count) {
    if (!json) {
        put_int(out, ':', count);
        return;
    }
    out += ",\"count\":";
    put_plain_int(out, count);
    out += ",\"cursor\":0";
}

// NEARBY key [LIMIT n] [IDS|COUNT|OBJECTS|POINTS] POINT lat lon meters over a collection of points only, as
// commands/search.py cmd_nearby runs it without filters, cursor or expiry: one ring when the
// wanted rows cover the collection, else store/query.py knn's rings (the same first radius
// from the same density, x4 each), collected until LIMIT rows.
Outcome run_nearby(const Arg* a, int argc, PyObject* collections, PyObject* plain, Col& col,
                   std::string& out, bool json) {
    int i = 2;
    long long limit = -1;
    Output output = OBJECTS;
    if (!parse_head(a, argc, i, limit, output)) return STOP;
    const bool counting = output == COUNT;
    if (argc != i + 4 || !ieq(a[i], "POINT")) return STOP;
    double lat, lon, meters;
    if (!parse_num(a[i + 1], lat) || !parse_num(a[i + 2], lon) || !parse_num(a[i + 3], meters)) return STOP;
    if (!(lat >= -90.0 && lat <= 90.0 && lon >= -180.0 && lon <= 180.0 && meters >= 0.0)) return STOP;
    if (limit < 0) limit = counting ? (1LL << 62) : 100;
    if (!counting && limit > SLICE) return STOP;  // maybe sliced (search.py _big)
    if (!col.open(collections, a[1])) return STOP;
    if (col.col == nullptr) {
        if (col.exists) return STOP;
        if (counting)
            put_count(out, json, 0);
        else
            Rows{json, output}.finish(out, 0);
        return DONE;
    }
    if (col.num_shapes() != 0) return STOP;
    const PointGrid& grid = *col.grid;
    const long long total = static_cast<long long>(PyDict_Size(col.items));
    const long long want = counting ? total : limit;
    std::vector<std::pair<double, uint32_t>> hits;
    std::vector<uint32_t> rows;
    long long count = 0, pos = 0;
    auto ring = [&](double inner, double outer) {  // true: LIMIT reached
        const double hi = hav_of(outer);
        const double lo = inner >= 0 ? hav_of(inner) : -1.0;
        double box[4];
        circle_box(lat, lon, outer, box);
        grid.ring_hits(lat, lon, box[0], box[1], box[2], box[3], lo, hi, hits, !counting);
        const long long take = std::min(static_cast<long long>(hits.size()), limit - count);
        pos += take;
        count += take;
        if (!counting)
            for (long long k = 0; k < take; ++k) rows.push_back(hits[k].second);
        return count >= limit;
    };
    bool full = false;
    if (want >= total) {
        full = ring(-1.0, meters);
    } else {
        const double cap = meters;
        const double per_cell =
            static_cast<double>(grid.size()) /
            static_cast<double>(std::max<size_t>(1, grid.num_blocks() << (2 * COARSE_SHIFT)));  // as query.py knn
        const double cell_m = CELL * 111195.0 * std::max(0.05, std::cos(lat * TO_RAD));
        double radius = std::max(50.0, cell_m * std::sqrt(2.0 * static_cast<double>(std::max(want, 1LL)) /
                                                          (M_PI * std::max(per_cell, 1e-9))));
        double inner = -1.0;
        for (;;) {
            const double outer = std::min(radius, cap);
            if ((full = ring(inner, outer))) break;
            if (outer >= cap || outer >= HALF_EARTH_M) break;
            inner = outer;
            radius = radius * 4.0;
        }
    }
    if (counting) {
        put_count(out, json, count);
        return DONE;
    }
    Rows reply{json, output};
    for (const uint32_t s : rows) {
        PyObject* id = grid.id_at(s);
        if (output != IDS && PyDict_GetItemWithError(col.items, id) != plain) return STOP;  // borrowed
        if (!reply.add(id, grid.lat_at(s), grid.lon_at(s))) return STOP;
    }
    reply.finish(out, full ? pos : 0);
    return DONE;
}

// SCAN key [LIMIT n] [IDS|COUNT|OBJECTS] over ids in order, every object a plain point (OBJECTS),
// as commands/search.py cmd_scan runs it without filters, cursor or expiry.
Outcome run_scan(const Arg* a, int argc, PyObject* collections, PyObject* plain, Col& col,
                 std::string& out, bool json) {
    int i = 2;
    long long limit = -1;
    Output output = OBJECTS;
    if (!parse_head(a, argc, i, limit, output) || argc != i) return STOP;
    if (limit < 0) limit = output == COUNT ? (1LL << 62) : 100;
    if (output != COUNT && limit > SLICE) return STOP;
    if (!col.open(collections, a[1])) return STOP;
    if (col.col == nullptr) {
        if (col.exists) return STOP;
        if (output == COUNT)
            put_count(out, json, 0);
        else
            Rows{json, output}.finish(out, 0);
        return DONE;
    }
    const long long total = static_cast<long long>(PyDict_Size(col.items));
    const long long take = std::min(total, limit);
    if (output == COUNT) {
        put_count(out, json, take);
        return DONE;
    }
    PyObject* ids = PyObject_CallMethod(col.items, "islice", "nn", static_cast<Py_ssize_t>(0),
                                        static_cast<Py_ssize_t>(take));
    PyObject* list = ids ? PySequence_List(ids) : nullptr;
    Py_XDECREF(ids);
    if (list == nullptr) return STOP;
    const Py_ssize_t n = PyList_GET_SIZE(list);
    Rows reply{json, output};
    Outcome result = DONE;
    for (Py_ssize_t k = 0; k < n && result == DONE; ++k) {
        PyObject* id = PyList_GET_ITEM(list, k);
        double lat = 0, lon = 0;
        if (!PyUnicode_Check(id) ||
            (output != IDS && (PyDict_GetItemWithError(col.items, id) != plain ||
                               !col.grid->point_of(id, lat, lon))) ||
            !reply.add(id, lat, lon))
            result = STOP;
    }
    Py_DECREF(list);
    if (result == DONE) reply.finish(out, take >= limit ? take : 0);
    return result;
}


// `lat lon` of a SET's POINT: parse_num's forms, within +-90 / +-180 (else Python's error).
bool parse_point(const Arg* a, double& lat, double& lon) {
    if (!parse_num(a[0], lat) || !parse_num(a[1], lon)) return false;
    return lat >= -90.0 && lat <= 90.0 && lon >= -180.0 && lon <= 180.0;
}

// Store `value` under a new id as Collection.set does for it: into the dict, and the id onto
// the id order's pending list (merged by IdList once MERGE_IDS_AT wait, as IdList.add's rule).
// False (a Python error set, or nothing pending to append to) with nothing changed.
bool store_new(Col& col, PyObject* oid, PyObject* value) {
    if (PyErr_Occurred()) return false;  // the lookup that found nothing failed
    if (col.pending == nullptr) {
        col.pending = PyObject_GetAttr(col.items, N.pending);
        if (col.pending != nullptr && !PyList_CheckExact(col.pending)) Py_CLEAR(col.pending);
    }
    if (col.pending == nullptr || PyDict_SetItem(col.items, oid, value) < 0) return false;
    if (PyList_Append(col.pending, oid) < 0) {  // undo the store: nothing half done
        if (PyDict_DelItem(col.items, oid) < 0) PyErr_Clear();
        return false;
    }
    if (PyList_GET_SIZE(col.pending) >= MERGE_IDS_AT) {
        PyObject* r = PyObject_CallMethodNoArgs(col.items, N.merge_pending);
        if (r == nullptr) PyErr_Clear();  // the ids stay pending: merged by the next read
        Py_XDECREF(r);
    }
    return true;
}

// A FIELD name check_field_name accepts, ASCII only (Python lowers other text by Unicode
// rules): not empty, not z / lat / lon in any case.
bool plain_field_name(const Arg& a) {
    if (a.n == 0) return false;
    for (size_t i = 0; i < a.n; ++i)
        if (static_cast<unsigned char>(a.p[i]) >= 0x80) return false;
    return !(ieq(a, "Z") || ieq(a, "LAT") || ieq(a, "LON"));
}

// A FIELD value that fields.value_of reads as a non-zero finite number: exactly its _NUMBER
// pattern -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? (no spaces, sign or leading zeros),
// then float(). Zero (which deletes the field), overflow, strings and JSON are Python's.
bool parse_field_number(const Arg& a, double& out) {
    if (a.n == 0 || a.n > 64) return false;
    const char* q = a.p;
    const char* e = a.p + a.n;
    if (*q == '-') ++q;
    if (q == e || *q < '0' || *q > '9') return false;
    if (*q == '0')
        ++q;
    else
        while (q < e && *q >= '0' && *q <= '9') ++q;
    if (q < e && *q == '.') {
        const char* frac = ++q;
        while (q < e && *q >= '0' && *q <= '9') ++q;
        if (q == frac) return false;
    }
    if (!skip_exponent(q, e) || q != e) return false;
    const auto r = std::from_chars(a.p, e, out, std::chars_format::general);
    return r.ec == std::errc() && r.ptr == e && std::isfinite(out) && out != 0.0;
}

// Collection weight of fields (Collection._index: len(name) + 8 each); -1 if not a dict.
long long fields_weight(PyObject* fields) {
    if (fields == Py_None) return 0;
    if (!PyDict_CheckExact(fields)) return -1;
    long long w = 0;
    Py_ssize_t i = 0;
    PyObject *k, *v;
    while (PyDict_Next(fields, &i, &k, &v)) {
        if (!PyUnicode_Check(k)) return -1;
        w += PyUnicode_GET_LENGTH(k) + 8;
    }
    return w;
}

// The fields of a stored value the fast path may change: None for a plain point, else those
// of an Item without expiry whose fields are None or a dict (a new reference). Empty for
// anything else, Python's case (expiry is _live_item's and Collection.set's to judge).
py::object lasting_fields(PyObject* value, const Kinds& kinds) {
    if (value == kinds.plain) return py::none();
    if (!PyObject_TypeCheck(value, reinterpret_cast<PyTypeObject*>(kinds.item))) return {};
    py::object expires = py::reinterpret_steal<py::object>(PyObject_GetAttr(value, N.expires_at));
    if (!expires || expires.ptr() != Py_None) return {};
    py::object fields = py::reinterpret_steal<py::object>(PyObject_GetAttr(value, N.fields));
    if (!fields || (fields.ptr() != Py_None && !PyDict_CheckExact(fields.ptr()))) return {};
    return fields;
}

// A new dict with `fields` (None: empty) to change and store in place of them.
py::object copy_fields(const py::object& fields) {
    return py::reinterpret_steal<py::object>(fields.ptr() == Py_None ? PyDict_New() : PyDict_Copy(fields.ptr()));
}

// What Collection.set keeps of an id's old value when a point with fields replaces it: its
// fields (lasting_fields) and the weight _unindex takes off. False: Python's case (an Item
// with expiry, or not a point; a Python error).
bool old_point_fields(PyObject* old, PyObject* oid, const Kinds& kinds, py::object& fields, long long& weight) {
    const long long id_weight = PyUnicode_GET_LENGTH(oid);
    fields = lasting_fields(old, kinds);
    if (!fields) return false;
    if (old == kinds.plain) {
        weight = 16 + id_weight;
        return true;
    }
    PyObject* obj = PyObject_GetAttr(old, N.obj);
    PyObject* kind = obj ? PyObject_GetAttr(obj, N.kind) : nullptr;
    PyObject* z = kind ? PyObject_GetAttr(obj, N.z) : nullptr;
    const bool point = z != nullptr && PyUnicode_Check(kind) && PyUnicode_Compare(kind, N.point) == 0;
    const long long obj_weight = z == Py_None ? 16 : 24;  // GeoObject.weight of a point
    Py_XDECREF(obj);
    Py_XDECREF(kind);
    Py_XDECREF(z);
    const long long fw = point ? fields_weight(fields.ptr()) : -1;
    if (fw < 0) return false;
    weight = obj_weight + id_weight + fw;
    return true;
}

// Item(GeoObject("point", lat, lon, None, (lon, lat, lon, lat)), fields, None): what
// Collection.set stores for a point with fields (empty: a Python error).
py::object point_item(const Kinds& kinds, double lat, double lon, PyObject* fields) {
    py::object la = py::reinterpret_steal<py::object>(PyFloat_FromDouble(lat));
    py::object lo = py::reinterpret_steal<py::object>(PyFloat_FromDouble(lon));
    if (!la || !lo) return {};
    py::object bbox = py::reinterpret_steal<py::object>(PyTuple_Pack(4, lo.ptr(), la.ptr(), lo.ptr(), la.ptr()));
    if (!bbox) return {};
    PyObject* geo_args[] = {N.point, la.ptr(), lo.ptr(), Py_None, bbox.ptr()};
    py::object obj = py::reinterpret_steal<py::object>(PyObject_Vectorcall(kinds.geo, geo_args, 5, nullptr));
    if (!obj) return {};
    PyObject* item_args[] = {obj.ptr(), fields, Py_None};
    return py::reinterpret_steal<py::object>(PyObject_Vectorcall(kinds.item, item_args, 3, nullptr));
}

// SET key id FIELD name value [FIELD name value ...] POINT lat lon (up to MAX_FIELDS), every
// value a non-zero number, into a collection that exists, over nothing, a plain point or a
// point Item without expiry: Collection.set's merge (old fields, then these in order), a new
// Item(GeoObject("point", lat, lon, None, (lon, lat, lon, lat)), fields, None), the index
// insert, the weight change.
Outcome run_set_fields(const Arg* a, int argc, PyObject* collections, const Kinds& kinds, Col& col) {
    if (argc < 9 || (argc - 6) % 3 != 0 || !ieq(a[argc - 3], "POINT")) return STOP;
    const int nfields = (argc - 6) / 3;
    double values[MAX_FIELDS];
    for (int f = 0; f < nfields; ++f) {
        const Arg* t = a + 3 + 3 * f;
        if (!ieq(t[0], "FIELD") || !plain_field_name(t[1]) || !parse_field_number(t[2], values[f])) return STOP;
    }
    double lat, lon;
    if (!parse_point(a + argc - 2, lat, lon)) return STOP;
    if (!col.open(collections, a[1]) || col.col == nullptr) return STOP;
    py::object oid = py::reinterpret_steal<py::object>(text(a[2]));
    if (!oid) return STOP;
    PyObject* old = PyDict_GetItemWithError(col.items, oid.ptr());  // borrowed
    if (old == nullptr && PyErr_Occurred()) return STOP;
    py::object old_fields = py::none();
    long long old_weight = 0;
    if (old != nullptr && !old_point_fields(old, oid.ptr(), kinds, old_fields, old_weight)) return STOP;
    py::object fields = copy_fields(old_fields);
    if (!fields) return STOP;
    for (int f = 0; f < nfields; ++f) {
        py::object name = py::reinterpret_steal<py::object>(text(a[4 + 3 * f]));
        py::object value = py::reinterpret_steal<py::object>(PyFloat_FromDouble(values[f]));
        if (!name || !value || PyDict_SetItem(fields.ptr(), name.ptr(), value.ptr()) < 0) return STOP;
    }
    py::object item = point_item(kinds, lat, lon, fields.ptr());
    if (!item) return STOP;
    // From here the store changes; what can fail fails first (the dict entry, the pending id).
    if (old == nullptr ? !store_new(col, oid.ptr(), item.ptr()) : PyDict_SetItem(col.items, oid.ptr(), item.ptr()) < 0)
        return STOP;
    col.grid->insert_obj(oid.ptr(), lat, lon);
    col.weight += 16 + PyUnicode_GET_LENGTH(oid.ptr()) + fields_weight(fields.ptr()) - old_weight;
    return DONE;
}

// FSET key id [XX] name value [name value ...] (up to MAX_FIELDS pairs, every value a non-zero
// number, no RETURN) of a plain point or an Item without expiry, in a collection that exists:
// Collection.set_field per pair in order (a value that differs counts; a new name adds
// len(name) + 8 to the weight), applied to a copy of the fields that replaces them at the end,
// so a failure on the way changes nothing. A plain point becomes the point Item SET would store.
// `changed` is the reply; nothing changed: nothing stored, nothing logged (cmd_fset's dirty).
Outcome run_fset(const Arg* a, int argc, PyObject* collections, const Kinds& kinds, Col& col,
                 long long& changed) {
    const int at = argc > 3 && ieq(a[3], "XX") ? 4 : 3;
    const int npairs = (argc - at) / 2;
    if (npairs < 1 || npairs > MAX_FIELDS || (argc - at) % 2 != 0) return STOP;
    double values[MAX_FIELDS];
    for (int f = 0; f < npairs; ++f) {
        const Arg* t = a + at + 2 * f;
        if (ieq(t[0], "RETURN") || !plain_field_name(t[0]) || !parse_field_number(t[1], values[f])) return STOP;
    }
    if (!col.open(collections, a[1]) || col.col == nullptr) return STOP;
    py::object oid = py::reinterpret_steal<py::object>(text(a[2]));
    if (!oid) return STOP;
    PyObject* value = PyDict_GetItemWithError(col.items, oid.ptr());  // borrowed
    if (value == nullptr) return STOP;  // a miss (XX's 0, or Python's error), or a Python error
    const py::object old = lasting_fields(value, kinds);
    if (!old) return STOP;
    py::object fields = copy_fields(old);
    if (!fields) return STOP;
    long long added = 0;
    changed = 0;
    for (int f = 0; f < npairs; ++f) {
        py::object name = py::reinterpret_steal<py::object>(text(a[at + 2 * f]));
        py::object number = py::reinterpret_steal<py::object>(PyFloat_FromDouble(values[f]));
        if (!name || !number) return STOP;
        PyObject* current = PyDict_GetItemWithError(fields.ptr(), name.ptr());  // borrowed
        if (current == nullptr) {
            if (PyErr_Occurred()) return STOP;
            added += PyUnicode_GET_LENGTH(name.ptr()) + 8;
        } else {
            const int same = PyObject_RichCompareBool(current, number.ptr(), Py_EQ);
            if (same < 0) return STOP;
            if (same) continue;
        }
        if (PyDict_SetItem(fields.ptr(), name.ptr(), number.ptr()) < 0) return STOP;
        ++changed;
    }
    if (changed == 0) return DONE;
    if (value == kinds.plain) {
        double lat, lon;
        if (!col.grid->point_of(oid.ptr(), lat, lon)) return STOP;
        py::object item = point_item(kinds, lat, lon, fields.ptr());
        if (!item || PyDict_SetItem(col.items, oid.ptr(), item.ptr()) < 0) return STOP;
    } else if (PyObject_SetAttr(value, N.fields, fields.ptr()) < 0) {
        return STOP;
    }
    col.weight += added;
    return DONE;
}


// Run one parsed request; STOP leaves it (and everything after it) to Python.
Outcome run_one(const Arg* a, int argc, int mode, PyObject* collections, const Kinds& kinds, Col& col,
                std::string& out, int& cmd, bool& logged) {
    PyObject* const plain = kinds.plain;
    const Arg& name = a[0];
    if (name.n == 4 && ieq(name, "PING")) {
        if (!(mode & PING) || argc > 2) return STOP;
        if (mode & JSON)
            out += ",\"ping\":\"pong\"";  // with or without a message, as cmd_ping
        else if (argc == 1)
            out += "+PONG\r\n";
        else
            put_bulk(out, a[1].p, a[1].n);
        cmd = C_PING;
        return DONE;
    }
    if (name.n == 3 && ieq(name, "SET")) {
        if (!(mode & (WRITE | REPLAY))) return STOP;
        if (argc != 6) {
            if (run_set_fields(a, argc, collections, kinds, col) != DONE) return STOP;
        } else {
            if (!ieq(a[3], "POINT")) return STOP;
            double lat, lon;
            if (!parse_point(a + 4, lat, lon)) return STOP;
            if (!col.open(collections, a[1])) return STOP;
            if (col.col == nullptr) return STOP;  // a new key: Python creates the collection
            PyObject* oid = text(a[2]);
            if (oid == nullptr) return STOP;
            PyObject* old = PyDict_GetItemWithError(col.items, oid);  // borrowed
            if (old == nullptr ? !store_new(col, oid, plain) : old != plain) {
                Py_DECREF(oid);  // a Python error; or fields, expiry, z or another geometry:
                return STOP;     // Collection.set's full path
            }
            if (old == nullptr) col.weight += 16 + PyUnicode_GET_LENGTH(oid);
            col.grid->insert_obj(oid, lat, lon);
            Py_DECREF(oid);
        }
        if (!(mode & (REPLAY | JSON))) out += "+OK\r\n";
        cmd = C_SET;
        logged = true;
        return DONE;
    }
    if (name.n == 4 && ieq(name, "FSET")) {
        long long changed = 0;
        if (!(mode & (WRITE | REPLAY)) || run_fset(a, argc, collections, kinds, col, changed) != DONE) return STOP;
        if (!(mode & (REPLAY | JSON))) {
            out += ':';
            out += std::to_string(changed);
            out += "\r\n";
        }
        cmd = C_FSET;
        logged = changed > 0;
        return DONE;
    }
    if (name.n == 6 && ieq(name, "NEARBY")) {
        if (!(mode & SEARCH) || run_nearby(a, argc, collections, plain, col, out, mode & JSON) != DONE)
            return STOP;
        cmd = C_NEARBY;
        return DONE;
    }
    if (name.n == 4 && ieq(name, "SCAN")) {
        if (!(mode & SEARCH) || run_scan(a, argc, collections, plain, col, out, mode & JSON) != DONE)
            return STOP;
        cmd = C_SCAN;
        return DONE;
    }
    if (name.n == 3 && ieq(name, "GET")) {
        if (!(mode & READ) || (argc != 3 && !(argc == 4 && ieq(a[3], "POINT")))) return STOP;
        if (!col.open(collections, a[1])) return STOP;
        if (col.col == nullptr) {
            if (col.exists || (mode & JSON)) return STOP;  // another index / a JSON error: Python's
            out += "$-1\r\n";
            cmd = C_GET;
            return DONE;
        }
        PyObject* oid = text(a[2]);
        if (oid == nullptr) return STOP;
        PyObject* value = PyDict_GetItemWithError(col.items, oid);  // borrowed
        double lat = 0, lon = 0;
        bool found = false;
        if (value == plain) found = col.grid->point_of(oid, lat, lon);
        Py_DECREF(oid);
        if (value == nullptr) {
            if (PyErr_Occurred() || (mode & JSON)) return STOP;  // JSON: "id not found" is Python's
            out += "$-1\r\n";
            cmd = C_GET;
            return DONE;
        }
        if (!found) return STOP;  // an Item: expiry, fields, other kinds are Python's
        std::string body;
        if (mode & JSON) {  // commands/keys.py cmd_get's JSON body of a plain point
            out += argc == 3 ? ",\"object\":" : ",\"point\":";
            if (!(argc == 3 ? put_geojson(out, lat, lon) : put_latlon(out, lat, lon))) return STOP;
        } else if (argc == 3) {
            if (!put_geojson(body, lat, lon)) return STOP;
            put_bulk(out, body.data(), body.size());
        } else {
            std::string b;
            if (!put_num(body, lat) || !put_num(b, lon)) return STOP;
            out += "*2\r\n";
            put_bulk(out, body.data(), body.size());
            put_bulk(out, b.data(), b.size());
        }
        cmd = C_GET;
        return DONE;
    }
    if (name.n == 3 && ieq(name, "DEL")) {  // commands/keys.py cmd_del without ERRON404
        if (!(mode & (WRITE | REPLAY)) || argc != 3) return STOP;
        if (!col.open(collections, a[1])) return STOP;
        cmd = C_DEL;
        const bool json = mode & JSON;  // {"ok":true} whether or not it deleted
        const bool quiet = json || (mode & REPLAY);
        if (col.col == nullptr) {
            if (col.exists) return STOP;
            if (!quiet) out += ":0\r\n";  // no such key: nothing deleted, nothing logged
            return DONE;
        }
        PyObject* oid = text(a[2]);
        if (oid == nullptr) return STOP;
        PyObject* value = PyDict_GetItemWithError(col.items, oid);  // borrowed
        if (value == nullptr) {
            Py_DECREF(oid);
            if (PyErr_Occurred()) return STOP;
            if (!quiet) out += ":0\r\n";
            return DONE;
        }
        if (value != plain || PyDict_Size(col.items) <= 1) {  // an Item; or the last: Python drops the key
            Py_DECREF(oid);
            return STOP;
        }
        // The id order first: what can fail fails before anything changed.
        if (col.list_remove == nullptr) col.list_remove = PyObject_GetAttr(col.items, N.list_remove);
        PyObject* r = col.list_remove ? PyObject_CallOneArg(col.list_remove, oid) : nullptr;
        if (r == nullptr) {
            Py_DECREF(oid);
            return STOP;
        }
        Py_DECREF(r);
        if (PyDict_DelItem(col.items, oid) < 0) {  // cannot fail for a str just found; if it did,
            PyErr_Clear();                          // the id goes back into the order
            if (col.pending == nullptr || PyList_Append(col.pending, oid) < 0) PyErr_Clear();
            Py_DECREF(oid);
            return STOP;
        }
        col.grid->remove(py::reinterpret_borrow<py::str>(oid));
        col.weight -= 16 + PyUnicode_GET_LENGTH(oid);  // Collection._unindex of a plain point
        Py_DECREF(oid);
        if (!quiet) out += ":1\r\n";
        logged = true;
        return DONE;
    }
    return STOP;
}

// execute_batch(buf, start, collections, plain, mode, max_args, max_bulk, max_request, budget,
// counts) -> (end, replies, aof, last, done): `end` is where Python's framing resumes (== start:
// nothing was done), `replies` the RESP replies of the requests done, `aof` their records (mode
// RECORD), `last` the last command's index (PING, SET, GET, NEARBY, SCAN, DEL, FSET; -1: none),
// `done` how many requests ran; each is counted into `counts` (metrics.CoreCounts' bytearray, or None).
// Stops once the replies reach `budget` bytes.
py::tuple execute_batch(py::handle buf, size_t start, py::handle collections, py::handle kinds_tuple, int mode,
                        size_t max_args, size_t max_bulk, size_t max_request, size_t budget,
                        py::handle counts_buf) {
    if (!PyByteArray_Check(buf.ptr()) && !PyBytes_Check(buf.ptr()))
        throw py::type_error("buf must be bytearray or bytes");
    if (!PyDict_Check(collections.ptr())) throw py::type_error("collections must be a dict");
    const Kinds kinds(kinds_tuple);
    const char* data = PyByteArray_Check(buf.ptr()) ? PyByteArray_AS_STRING(buf.ptr())
                                                    : PyBytes_AS_STRING(buf.ptr());
    const size_t end = static_cast<size_t>(Py_SIZE(buf.ptr()));
    const Limits lim{max_args, max_bulk, max_request};
    Counts counts;
    if (!counts_buf.is_none() && !counts.attach(counts_buf.ptr()))
        throw py::type_error("counts must be metrics.CoreCounts' bytearray");
    std::string out, aof, fields;  // fields: a JSON reply's members after "ok" (mode JSON)
    const bool json = mode & JSON;
    Col col;
    int last = -1;
    long long done_count = 0;
    size_t pos = start;
    Arg args[MAX_ARGS];
    using clock = std::chrono::steady_clock;
    while (pos < end && out.size() < budget) {
        const auto t0 = clock::now();
        int argc = 0;
        size_t next = 0;
        if (!parse_request(data, pos, end, lim, args, argc, next)) break;
        int cmd = -1;
        bool logged = false;  // its record goes to the AOF (a SET, a DEL that deleted, a changing FSET)
        const size_t mark = out.size();
        Outcome done = STOP;
        fields.clear();
        try {  // a failure (memory, the index full) leaves this request to Python, keeping the rest
            done = run_one(args, argc, mode, collections.ptr(), kinds, col, json ? fields : out, cmd,
                           logged);
            if (done == DONE && json) {  // output.py json_ok, as a RESP bulk (a JSON-mode RESP client)
                std::string doc = "{\"ok\":true";
                doc += fields;
                doc += ",\"elapsed\":\"";
                put_elapsed(doc, std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count());
                doc += "\"}";
                put_bulk(out, doc.data(), doc.size());
            }
        } catch (py::error_already_set& e) {
            e.restore();
        } catch (const std::exception&) {
        }
        if (done != DONE) {
            PyErr_Clear();
            out.resize(mark);  // nothing of a request left to Python is answered here
            break;
        }
        if (logged && (mode & RECORD)) aof.append(data + pos, next - pos);
        counts.add(cmd, std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now() - t0).count());
        ++done_count;
        last = cmd;
        pos = next;
    }
    col.release();
    PyObject* r = PyTuple_New(5);
    if (r == nullptr) throw py::error_already_set();
    py::tuple result = py::reinterpret_steal<py::tuple>(r);
    PyTuple_SET_ITEM(r, 0, PyLong_FromSize_t(pos));
    PyTuple_SET_ITEM(r, 1, PyBytes_FromStringAndSize(out.data(), static_cast<Py_ssize_t>(out.size())));
    PyTuple_SET_ITEM(r, 2, PyBytes_FromStringAndSize(aof.data(), static_cast<Py_ssize_t>(aof.size())));
    PyTuple_SET_ITEM(r, 3, PyLong_FromLong(last));
    PyTuple_SET_ITEM(r, 4, PyLong_FromLongLong(done_count));
    for (int k = 0; k < 5; ++k)
        if (PyTuple_GET_ITEM(r, k) == nullptr) throw py::error_already_set();
    return result;
}

// replay_batch(buf, start, collections, kinds) -> (end, records): AOF replay (at start-up only:
// aof/loader.py) of a run of the writes execute_batch runs (SET of points, FSET, DEL) into
// existing collections, as dispatch.apply_record would apply them; stops at the first other one.
py::tuple replay_batch(py::handle buf, size_t start, py::handle collections, py::handle kinds) {
    constexpr size_t HUGE = size_t{1} << 40;  // the AOF holds what was acknowledged: no limits
    py::tuple r = execute_batch(buf, start, collections, kinds, REPLAY, MAX_ARGS, HUGE, HUGE, HUGE, py::none());
    return py::make_tuple(r[0], r[4]);
}

// execute_batch as a METH_FASTCALL function: called once per client read, where pybind11's
// argument conversion (~1 us) would be a good part of an unpipelined request's cost here.
PyObject* execute_batch_fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "execute_batch takes 10 arguments");
        return nullptr;
    }
    size_t n[5];
    const int at[5] = {1, 5, 6, 7, 8};
    for (int k = 0; k < 5; ++k) {
        n[k] = PyLong_AsSize_t(args[at[k]]);
        if (n[k] == static_cast<size_t>(-1) && PyErr_Occurred()) return nullptr;
    }
    const long mode = PyLong_AsLong(args[4]);
    if (mode == -1 && PyErr_Occurred()) return nullptr;
    try {
        py::tuple r = execute_batch(args[0], n[0], args[2], args[3], static_cast<int>(mode), n[1], n[2], n[3], n[4],
                                    args[9]);
        return r.release().ptr();
    } catch (py::error_already_set& e) {
        e.restore();
    } catch (py::builtin_exception& e) {  // py::type_error: a TypeError
        e.set_error();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
}

PyMethodDef EXECUTE_DEF = {"execute_batch", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(execute_batch_fast)),
                           METH_FASTCALL,
                           "execute_batch(buf, start, collections, plain, mode, max_args, max_bulk, max_request, "
                           "budget, counts): the compiled fast path (src/core/fastpath.cpp)"};

}  // namespace
}  // namespace geocore

void register_fastpath(py::module_& m) {
    using geocore::name_of;
    geocore::N = {name_of("items"), name_of("points"), name_of("shapes"), name_of("weight"), name_of("_pending"),
                   name_of("_merge_pending"), name_of("_list_remove"), name_of("obj"), name_of("fields"),
                   name_of("expires_at"), name_of("kind"), name_of("z"), name_of("point")};
    PyObject* f = PyCFunction_NewEx(&geocore::EXECUTE_DEF, nullptr, m.attr("__name__").ptr());
    if (f == nullptr) throw py::error_already_set();
    m.add_object("execute_batch", py::reinterpret_steal<py::object>(f));
    m.def("replay_batch", &geocore::replay_batch, "AOF replay of plain SET records (src/core/fastpath.cpp)");
    m.attr("MERGE_IDS_AT") = geocore::MERGE_IDS_AT;
    m.attr("FASTPATH_MODES") = py::make_tuple(int{geocore::PING}, int{geocore::READ}, int{geocore::WRITE},
                                              int{geocore::RECORD}, int{geocore::SEARCH}, int{geocore::JSON});
    m.def("elapsed_text", [](long long ns) {
        std::string s;
        geocore::put_elapsed(s, ns);
        return py::bytes(s);
    }, "output.py elapsed_text as the fast path writes it (UTF-8 bytes), for tests");
}
