"""Throughput of the per-chunk checksum candidates, on the chunk sizes the gRPC transport uses.

    python bench/bench_checksum.py

Each candidate checks 256 MiB of random bytes cut into chunks of 256 KiB and of 2 MiB (the smallest and
largest default chunk sizes for models above 2 MiB), as views into one buffer, as the receiver does. The
median of five passes is reported in GiB/s: SHA-256 (what chunks carried before), zlib's CRC-32, and the
same CRC-32 computed by ISA-L (what fedra uses, ``fedra.transport.grpc._chunks.crc32``).
"""

from __future__ import annotations

import hashlib
import statistics
import time
import zlib
from collections.abc import Callable

import numpy as np

from fedra.transport.grpc._chunks import crc32

TOTAL = 256 << 20


def throughput(fn: Callable[[memoryview], object], view: memoryview, size: int, passes: int = 5) -> float:
    """GiB/s of ``fn`` over ``view`` in ``size``-byte pieces, median of ``passes``."""
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for offset in range(0, view.nbytes, size):
            fn(view[offset:offset + size])
        times.append(time.perf_counter() - t0)
    return view.nbytes / statistics.median(times) / 2**30


def main() -> None:
    view = memoryview(np.random.default_rng(0).integers(0, 256, TOTAL, dtype=np.uint8)).cast("B")
    candidates: dict[str, Callable[[memoryview], object]] = {
        "SHA-256 (hashlib)": lambda b: hashlib.sha256(b).digest(),
        "CRC-32 (zlib)": zlib.crc32,
        "CRC-32 (fedra: ISA-L)": crc32,
    }
    print(f"{TOTAL >> 20} MiB of random bytes, median of 5 passes, GiB/s")
    for size in (256 << 10, 2 << 20):
        row = ", ".join(f"{name} {throughput(fn, view, size):.2f}" for name, fn in candidates.items())
        print(f"chunks of {size >> 10} KiB: {row}")


if __name__ == "__main__":
    main()
