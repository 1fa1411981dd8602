#!/usr/bin/env bash
# The longer sanitizer run: .ci/sanitize (the CI step: geoserver's compiled core built with
# AddressSanitizer and UndefinedBehaviorSanitizer in a temporary directory, the core's
# differential, store, fuzz-corpus and fast-path tests against it) with 2,000 hypothesis examples
# per differential property and the server-level search and keys tests on top (their servers
# inherit the sanitized core):
#
#     bash bench/sanitize_core.sh                 # ~2-4 minutes on 2 cores
#     EXAMPLES=5000 bash bench/sanitize_core.sh   # more hypothesis examples per property
#
# Any sanitizer report or failed test fails the run; see docs/spatial-index.md#sanitizers-and-fuzz-targets.
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES="${EXAMPLES:-2000}" exec bash .ci/sanitize tests/server/test_search.py tests/server/test_keys.py "$@"
