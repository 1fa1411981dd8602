#!/usr/bin/env bash
# Build geoserver's compiled core (src/core/*.cpp) with AddressSanitizer and
# UndefinedBehaviorSanitizer into build/sanitize/ and run the differential test (and the store and
# search tests, whose servers inherit the sanitized core) against that build:
#
#     bash bench/sanitize_core.sh                 # ~1-2 minutes
#     EXAMPLES=5000 bash bench/sanitize_core.sh   # more hypothesis examples per property
#
# Needs g++ with libasan/libubsan (gcc's) and pybind11's headers (fetched into build/sanitize/pylib
# when the venv has none). Any sanitizer report aborts the run (-fno-sanitize-recover); leaks are not checked
# (CPython keeps objects alive at exit). Not part of .ci/run: it takes a while and rebuilds the core.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
OUT=build/sanitize
mkdir -p "$OUT"
# pybind11's headers: the venv's if it has them, else a copy under build/sanitize/ (the venv is not touched)
if ! "$PY" -c "import pybind11" 2>/dev/null; then
    [ -d "$OUT/pylib/pybind11" ] || "$PY" -m pip install --quiet --target "$OUT/pylib" 'pybind11>=2.12'
fi
EXT="$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")"
INC="$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")"
PB="$(PYTHONPATH="$OUT/pylib" "$PY" -c "import pybind11; print(pybind11.get_include())")"
LIB="$PWD/$OUT/_core$EXT"

g++ -std=c++17 -O1 -g -fno-omit-frame-pointer -ffp-contract=off -shared -fPIC \
    -fsanitize=address,undefined -fno-sanitize-recover=undefined \
    -I"$INC" -I"$PB" src/core/*.cpp -o "$LIB"

export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export GEOSERVER_CORE=cpp GEOSERVER_CORE_LIB="$LIB" GEOSERVER_DIFF_EXAMPLES="${EXAMPLES:-2000}"
"$PY" -c "from geoserver.store import index; assert index._core.__file__ == '$LIB', index._core.__file__; print('sanitized core:', index._core.__file__)"
"$PY" -m pytest -q -p no:cacheprovider tests/server/test_core_differential.py \
    tests/server/test_store.py tests/server/test_search.py tests/server/test_keys.py "$@"
echo "sanitize_core: no AddressSanitizer / UndefinedBehaviorSanitizer report"
