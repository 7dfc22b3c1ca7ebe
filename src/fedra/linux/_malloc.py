"""glibc's heap and a server that moves large payloads on many threads.

glibc serves an allocation above its mmap threshold with a fresh mapping that goes back to the kernel when
freed, and one below it from a per-thread arena that keeps freed memory for reuse. The threshold is
dynamic: freeing a mapped block raises it to that block's size, so once a payload chunk (a few MiB) has
been freed, every later chunk comes from an arena. With one arena per busy gRPC thread, a server's
resident memory then grows with the number of clients although it holds only a few payloads at a time:
the bench measured 579 MiB of peak RSS above job start for 100 clients x 4 MiB with the dynamic threshold,
292 MiB with it fixed at 1 MiB (bench/bench_network.py). Fixing the threshold turns the dynamic rule off.

Where to fix it is the caller's knowledge: above the blocks that come and go by the thousand (a
transport's chunk messages: reused from an arena instead of mapped, zeroed page by page and unmapped each
time), below the payload-sized buffers that must not pile up in arenas. The gRPC transport names its
value (``fedra.transport.grpc.MMAP_THRESHOLD``).

The server also keeps one arena for all its threads (:func:`limit_arenas`). glibc gives each thread that
allocates an arena of its own, up to 8 per core. A gRPC server's handler threads each take chunk
messages (a few MiB) from theirs and free them, and every arena keeps its own free space and gives its
own top back to the kernel, so a chunk often lands on pages the kernel has to fault in and zero again.
With one arena, what one thread frees the next one reuses: rounds of 10 clients x 10M float32 took
0.98-0.99 s instead of 1.16-1.17 s, with a third of the page faults, and the server's peak RSS at
100 x 1M went from 24 to 20-21 x the model (bench/bench_network.py, alternating runs; BENCHMARKS.md). Small blocks, the ones threads
allocate most often, come from each thread's cache without the arena's lock.

And the arena keeps some free space at its top (:func:`set_trim_threshold`). glibc gives the top back to
the kernel as soon as more than 128 KiB of it is free, so the chunk messages allocated and freed there
all the time kept landing on pages to fault in again. With the threshold at the chunks a server
handles at once (16 x 2 MiB) and one arena, 10 x 10M rounds took 0.99-1.04 s against 1.23-1.32 s with
glibc's defaults, with 8k page faults per round against 130k-163k, and no more peak memory
(bench/bench_network.py, three alternating pairs). With one arena, that is the most free memory the
rule keeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

__all__ = ["fix_mmap_threshold", "limit_arenas", "set_trim_threshold"]

log = logging.getLogger("fedra.linux")

_M_TRIM_THRESHOLD: Final = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8


def _mallopt(param: int, value: int, what: str) -> bool:
    """glibc's ``mallopt(param, value)``; False, changing nothing, where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("not glibc: the heap's %s is left as it is", what)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(param, int(value)))


def fix_mmap_threshold(nbytes: int) -> bool:
    """Serve allocations of ``nbytes`` or more from their own mappings, always (glibc only).

    Returns False, and changes nothing, where the C library is not glibc.
    """
    return _mallopt(_M_MMAP_THRESHOLD, nbytes, "mmap threshold")


def limit_arenas(count: int = 1) -> bool:
    """Make no more arenas once there are ``count``: threads without one share those there are (glibc only).

    Arenas already made are kept and shared, so call it before other threads allocate: then ``count``
    is what there will be. glibc fixes its own limit when a ninth arena is wanted, and ignores this
    after that. Returns False, and changes nothing, where the C library is not glibc.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected an int >= 1, got {count!r}")
    return _mallopt(_M_ARENA_MAX, count, "arena count")


def set_trim_threshold(nbytes: int) -> bool:
    """Give an arena's free top back to the kernel only once it is larger than ``nbytes`` (glibc only).

    Returns False, and changes nothing, where the C library is not glibc.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes < 1 << 31:
        raise ValueError(f"nbytes: expected an int from 0 to 2**31 - 1, got {nbytes!r}")
    return _mallopt(_M_TRIM_THRESHOLD, nbytes, "trim threshold")
