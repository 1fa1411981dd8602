"""Shared pieces of the fuzz targets in tests/fuzz/: a byte reader that turns fuzzer input into
choices (so a target needs no atheris to replay its corpus), an in-process geoserver (the command
table without sockets), and the atheris entry point.

Each target module defines `one_input(data: bytes) -> None`, which raises AssertionError (or any
unexpected exception) on a finding. `python tests/fuzz/fuzz_X.py [-atheris_runs=N] [dir ...]`
fuzzes it with atheris (libFuzzer's flags); `-blind_runs=N [-blind_seed=S]` mutates the corpus
without atheris or coverage (for the sanitizer build); tests/fuzz/test_fuzz_smoke.py replays the
corpus in tests/fuzz/corpus/<target>/ through the same function under pytest.
"""

from __future__ import annotations

import atexit
import hashlib
import inspect
import os
import random
import shutil
import struct
import sys
import tempfile
import time
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


def mutate(rnd: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """A few libFuzzer-style edits: flip, set, insert, erase, duplicate, splice with another input."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 6)):
        op, at = rnd.randrange(6), rnd.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[at % len(buf)] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:
            buf[at % len(buf)] = rnd.choice((0, 1, 0x7F, 0x80, 0xFF, 0x2A, 0x24, 0x0D, 0x0A,
                                             rnd.randrange(256)))
        elif op == 2:
            buf[at:at] = rnd.randbytes(rnd.randint(1, 8))
        elif op == 3 and buf:
            del buf[at:at + rnd.randint(1, 16)]
        elif op == 4 and buf:
            piece = buf[at:at + rnd.randint(1, 64)]
            buf[at:at] = piece * rnd.randint(1, 4)
        else:
            other = rnd.choice(pool)
            cut = rnd.randrange(len(other) + 1)
            buf[at:] = other[cut:cut + rnd.randint(0, 512)]
    return bytes(buf[:1 << 20])


def blind(one_input: Callable[[bytes], None], target: str, runs: int, seed: int) -> None:
    """Mutation fuzzing without coverage feedback (no atheris needed): for runs under the
    sanitizer build, where atheris's coverage does not work with a preloaded libasan."""
    rnd = random.Random(seed)
    pool = [p.read_bytes() for p in corpus(target) if not p.name.startswith("bug-")]
    pool = [p for p in pool if len(p) <= 65536] or [b""]
    started = time.monotonic()
    for i in range(runs):
        data = mutate(rnd, rnd.choice(pool), pool)
        try:
            one_input(data)
        except BaseException:
            name = f"crash-{hashlib.sha1(data).hexdigest()}"
            Path(name).write_bytes(data)
            print(f"fuzzkit: run {i} failed; input written to {name}", file=sys.stderr)
            raise
        if rnd.random() < 0.05:  # keep some inputs that passed, so edits compound
            pool.append(data)
    seconds = time.monotonic() - started
    print(f"fuzzkit: {runs} blind runs in {seconds:.0f} s ({runs / seconds:.0f}/s), seed {seed}, no failure",
          file=sys.stderr)


def main(one_input: Callable[[bytes], None], target: str) -> None:
    """atheris entry point: instrument geoserver's loaded Python code, then fuzz. The C++ core
    is not instrumented for coverage (it is built without -fsanitize=fuzzer): inputs that only
    reach new C++ branches are not kept for that reason.
    With no corpus directory on the command line, the checked-in corpus seeds the run and new
    inputs go to a temporary directory (libFuzzer writes into the first one it is given)."""
    flags = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if a.startswith("-blind") and "=" in a)
    if "blind_runs" in flags:  # -blind_runs=N [-blind_seed=S]
        blind(one_input, target, int(flags["blind_runs"]), int(flags.get("blind_seed", "1")))
        return
    import atheris

    argv = list(sys.argv)
    if not any(os.path.isdir(a) for a in argv[1:]):
        argv += [tempfile.mkdtemp(prefix=f"geofuzz-{target}-"), str(CORPUS / target)]
    print(f"fuzzkit: instrumented {instrument()} functions", file=sys.stderr)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
