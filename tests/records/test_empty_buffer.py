"""empty_buffer: payload buffers on transparent huge pages, returned to the kernel with their last view."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from fedra.records import empty_buffer

HUGE = 2 << 20


def _vma(address: int) -> tuple[int, int, list[str]] | None:
    """The mapping of this process that holds ``address``: its start, end and smaps lines."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(x, 16) for x in head.split("-"))
            if lo <= address < hi:
                rest = []
                for more in lines[i + 1:]:
                    first = more.split()[0]
                    if "-" in first and all(c in "0123456789abcdef-" for c in first):
                        break
                    rest.append(more)
                return lo, hi, rest
    return None


@pytest.mark.parametrize("nbytes", [0, 1, 4095, HUGE - 1, HUGE, 4_000_123, 10 * HUGE + 17])
def test_a_writable_uint8_array_of_exactly_the_size(nbytes: int) -> None:
    a = empty_buffer(nbytes)
    assert a.dtype == np.uint8 and a.shape == (nbytes,) and a.flags.writeable and a.flags.c_contiguous
    a[:] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8)  # every byte can be written and read back
    assert np.array_equal(a, np.arange(nbytes, dtype=np.uint64).astype(np.uint8))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="no /proc/self/smaps (not Linux)")
def test_a_large_buffer_starts_on_a_huge_page_and_is_advised_for_them() -> None:
    a = empty_buffer(4_000_123)
    assert a.ctypes.data % HUGE == 0
    vma = _vma(a.ctypes.data)
    assert vma is not None
    lo, hi, smaps = vma
    flags = next(line for line in smaps if line.startswith("VmFlags:")).split()[1:]
    enabled = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not enabled.exists() or "[never]" in enabled.read_text():
        pytest.skip("the kernel has no transparent huge pages (or they are off): small pages, as before")
    # "hg": MADV_HUGEPAGE. The whole huge pages inside the buffer are advised and the rest is not, so the
    # advised part is a mapping of its own: from the buffer's start to its last whole huge page.
    assert "hg" in flags
    assert (lo, hi) == (a.ctypes.data, a.ctypes.data + a.nbytes // HUGE * HUGE)
    tail = _vma(hi)
    assert tail is not None and "hg" not in next(x for x in tail[2] if x.startswith("VmFlags:")).split()


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="no /proc/self/smaps (not Linux)")
def test_the_mapping_goes_back_to_the_kernel_with_the_last_view() -> None:
    a = empty_buffer(3 * HUGE)
    address = a.ctypes.data
    view = a[10:20]
    del a
    gc.collect()
    assert _vma(address) is not None  # a view still holds it
    del view
    gc.collect()
    assert _vma(address) is None
