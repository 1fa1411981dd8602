"""Glob patterns (KEYS, PDEL, SCAN/search MATCH, CONFIG GET) compiled once and cached.

The cache is a bounded LRU: a client sending a new pattern with every request (or long
ones: the command layer caps their length at `max-pattern-length`) costs at most
`CACHE_SIZE` compiled patterns, not the 32768 that fnmatch's own cache keeps.
Semantics are fnmatch's (`*`, `?`, `[...]`, `[!...]`), case-sensitive, `*` matching newlines;
`[^...]` negates too, as in Tile38's matcher (fnmatch would read the `^` as a literal).
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable

CACHE_SIZE = 256

Matcher = Callable[[str], object]


@functools.lru_cache(maxsize=CACHE_SIZE)
def matcher(pattern: str) -> Matcher:
    """The match function of a glob (truthy when the whole string matches)."""
    return re.compile(fnmatch.translate(pattern.replace("[^", "[!")), re.DOTALL).match
