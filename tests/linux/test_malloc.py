"""fix_mmap_threshold: large blocks keep coming from their own mappings after one has been freed."""

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
