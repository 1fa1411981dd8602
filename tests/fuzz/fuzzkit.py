"""Shared pieces of the fuzz targets in tests/fuzz/: a byte reader that turns fuzzer input into
choices (so a target needs no atheris to replay its corpus), an in-process geoserver (the command
table without sockets), and the atheris entry point.

Each target module defines `one_input(data: bytes) -> None`, which raises AssertionError (or any
unexpected exception) on a finding. `python tests/fuzz/fuzz_X.py [-atheris_runs=N] [dir ...]`
fuzzes it with atheris (libFuzzer's flags); tests/fuzz/test_fuzz_smoke.py replays the corpus in
tests/fuzz/corpus/<target>/ through the same function under pytest.
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "corpus"
# GEOFUZZ_KNOWN_BUGS=skip: treat the open findings (corpus/*/bug-*) as handled, to look past them
KNOWN_BUGS = os.environ.get("GEOFUZZ_KNOWN_BUGS", "")


class Data:
    """Consumes fuzzer bytes as small decisions; past the end every read is 0 / empty, so any
    input is a valid (if short) program."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def left(self) -> int:
        return len(self.buf) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.buf):
            return 0
        self.pos += 1
        return self.buf[self.pos - 1]

    def below(self, n: int) -> int:
        """An int in [0, n) from one or two bytes."""
        if n <= 256:
            return self.byte() % n
        return (self.byte() << 8 | self.byte()) % n

    def pick(self, options: Sequence[Any]) -> Any:
        return options[self.below(len(options))]

    def take(self, n: int) -> bytes:
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def double(self) -> float:
        """Any IEEE double, NaN, infinities and subnormals included."""
        return struct.unpack("<d", self.take(8).ljust(8, b"\0"))[0]


def scratch_dir() -> Path:
    """A temporary directory removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="geofuzz-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def inproc_server() -> tuple[Any, Any, Callable[[list[bytes], bool], bytes]]:
    """A Server that was never started (no sockets, no AOF), a Client without a transport, and
    `execute(argv, json) -> reply bytes` through geoserver.dispatch (the command table, its
    checks and its reply encoders: the path every client request takes after framing)."""
    from geoserver import dispatch
    from geoserver.config import ServerConfig
    from geoserver.server import Client, Server

    server = Server(ServerConfig(dir=scratch_dir(), appendonly=False, port=0))
    client = Client(server)

    def execute(argv: list[bytes], json: bool = False) -> bytes:
        reply = dispatch.execute(server, client, argv, json)
        assert isinstance(reply, bytes), f"{argv[:2]!r}: a store command answered later"
        return reply

    return server, client, execute


def corpus(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())


def instrument(prefixes: tuple[str, ...] = ("geoserver", "hiredis", "fuzz_", "fuzzkit")) -> int:
    """Coverage instrumentation of the loaded functions of these modules only (all 10,000 loaded
    functions, atheris.instrument_all, take minutes); returns how many."""
    import gc

    import atheris

    count = 0
    for obj in gc.get_objects():
        if inspect.isfunction(obj) and (obj.__module__ or "").startswith(prefixes):
            try:
                atheris.instrument_func(obj)
                count += 1
            except Exception as exc:  # a function atheris cannot patch stays uninstrumented
                print(f"fuzzkit: {obj.__qualname__} not instrumented: {exc}", file=sys.stderr)
    return count


def main(one_input: Callable[[bytes], None], target: str) -> None:
    """atheris entry point: instrument geoserver's loaded Python code, then fuzz. The C++ core
    is not instrumented for coverage (it is built without -fsanitize=fuzzer): inputs that only
    reach new C++ branches are not kept for that reason.
    With no corpus directory on the command line, the checked-in corpus seeds the run and new
    inputs go to a temporary directory (libFuzzer writes into the first one it is given)."""
    import atheris

    argv = list(sys.argv)
    if not any(os.path.isdir(a) for a in argv[1:]):
        argv += [tempfile.mkdtemp(prefix=f"geofuzz-{target}-"), str(CORPUS / target)]
    print(f"fuzzkit: instrumented {instrument()} functions", file=sys.stderr)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
