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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Final

__all__ = ["fix_mmap_threshold"]

log = logging.getLogger("fedra.linux")

_M_MMAP_THRESHOLD: Final = -3  # from glibc's malloc.h


def fix_mmap_threshold(nbytes: int) -> bool:
    """Serve allocations of ``nbytes`` or more from their own mappings, always (glibc only).

    Returns False, and changes nothing, where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("not glibc: the heap's mmap threshold is left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(nbytes)))
