"""fix_mmap_threshold: large blocks keep coming from their own mappings after one has been freed.
limit_arenas: threads share one arena instead of taking one each."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from fedra.linux import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold(1 << 20)
def maps():
    return [line.split() for line in open("/proc/self/maps")]
first = bytearray(3 << 20)   # above glibc's initial threshold: a mapping of its own
del first                    # freeing it raises the dynamic threshold above 3 MiB, unless it is fixed
before = maps()
second = bytearray(3 << 20)
changed = [m for m in maps() if m not in before]  # a new or grown region
print("heap" if any(m[-1] == "[heap]" for m in changed) else "mapping")
"""


def _where_the_second_block_went(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_a_fixed_threshold_keeps_large_blocks_in_their_own_mappings() -> None:
    if "glibc" not in " ".join(__import__("platform").libc_ver()):
        pytest.skip("the C library is not glibc: mallopt's mmap threshold does not apply")
    assert _where_the_second_block_went("dynamic") == "heap"  # glibc's dynamic rule at work
    assert _where_the_second_block_went("fixed") == "mapping"


ARENAS = """
import sys, threading, ctypes
from fedra.linux import limit_arenas
if sys.argv[1] == "limited":
    assert limit_arenas(1)
held, ready = [], threading.Barrier(4)
def work():
    held.append(bytearray(1 << 16))  # a malloc on this thread: glibc gives it an arena
    ready.wait()                      # all four alive at once, so none can inherit a finished one's
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True, check=True)
    return sum(line.startswith("Arena ") for line in out.stderr.splitlines())


def test_limited_arenas_are_shared_by_threads_started_after() -> None:
    if "glibc" not in " ".join(__import__("platform").libc_ver()):
        pytest.skip("the C library is not glibc: mallopt's arena limit does not apply")
    assert _arenas("default") >= 3  # glibc's rule: a new arena for each thread that allocates (up to 8/core)
    assert _arenas("limited") == 1


@pytest.mark.parametrize("count", [0, -1, True, 1.0])
def test_an_arena_count_below_one_is_refused(count: object) -> None:
    from fedra.linux import limit_arenas

    with pytest.raises(ValueError, match="count: expected an int >= 1"):
        limit_arenas(count)  # type: ignore[arg-type]


TRIM = """
import sys
from fedra.linux import fix_mmap_threshold, set_trim_threshold
assert fix_mmap_threshold(64 << 20)  # the block below comes from the heap, not a mapping of its own
if sys.argv[1] == "kept":
    assert set_trim_threshold(32 << 20)
def heap():
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            return hi - lo
    return 0
block = bytearray(8 << 20)  # at the heap's top, touched
grown = heap()
del block
print(grown - heap())  # bytes the heap gave back to the kernel
"""


def _given_back(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", TRIM, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def test_a_trim_threshold_keeps_a_freed_top_for_reuse() -> None:
    if "glibc" not in " ".join(__import__("platform").libc_ver()):
        pytest.skip("the C library is not glibc: mallopt's trim threshold does not apply")
    assert _given_back("default") >= 8 << 20  # glibc's 128 KiB: the freed top goes back at once
    assert _given_back("kept") == 0


@pytest.mark.parametrize("nbytes", [-1, 1 << 31, True, 1.5])
def test_a_trim_threshold_out_of_range_is_refused(nbytes: object) -> None:
    from fedra.linux import set_trim_threshold

    with pytest.raises(ValueError, match="nbytes: expected an int from 0 to 2"):
        set_trim_threshold(nbytes)  # type: ignore[arg-type]
