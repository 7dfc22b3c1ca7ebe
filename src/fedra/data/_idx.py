"""A strict reader for the IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.

Format (LeCun, Cortes & Burges, "The MNIST database of handwritten digits", section "File formats"):
two zero bytes, a type-code byte, a byte giving the number of dimensions ``d``, then ``d`` big-endian
uint32 sizes, then the array in C order, big-endian. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64.

The reader checks every part of the header and that the payload has exactly the size the header
announces, so a truncated download fails with a :class:`~fedra.errors.DatasetError` naming the file
rather than as a reshape error later. The array is a zero-copy view of the (decompressed) bytes.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fedra.errors import DatasetError

__all__ = ["IDX_DTYPES", "read_idx"]

#: IDX type code -> numpy dtype (big-endian, as stored).
IDX_DTYPES: Final[dict[int, np.dtype[Any]]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC: Final = b"\x1f\x8b"


def read_idx(path: str | Path) -> npt.NDArray[Any]:
    """Read one IDX file into a numpy array.

    Parameters
    ----------
    path : str or pathlib.Path
        The file; gzip compression is detected from its content, not its name.

    Returns
    -------
    numpy.ndarray
        The array, with the shape and (big-endian) dtype the header declares; read-only.

    Raises
    ------
    DatasetError
        If the file cannot be read, is not valid gzip, has a malformed header, or holds more or fewer
        bytes than its header declares. The message names the file.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read IDX file: {exc.strerror or exc}") from exc
    where = str(p)
    if raw[:2] == _GZIP_MAGIC:
        where = f"{p} (decompressed)"
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(
                f"{p}: expected a valid gzip stream, got a corrupt or truncated one ({exc}); "
                "download or install the file again"
            ) from exc
    if len(raw) < 4:
        raise DatasetError(
            f"{where}: expected an IDX header of at least 4 bytes, found {len(raw)} bytes; "
            "the file is truncated"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(
            f"{where}: expected an IDX magic number starting with two zero bytes, got "
            f"0x{raw[:4].hex()}; this is not an IDX file"
        )
    code, ndim = raw[2], raw[3]
    dtype = IDX_DTYPES.get(code)
    if dtype is None:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(
            f"{where}: expected an IDX type code in {{{allowed}}}, got 0x{code:02X}; "
            "this is not an IDX file or it is corrupt"
        )
    if ndim == 0:
        raise DatasetError(f"{where}: expected at least one dimension in the IDX header, got 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(
            f"{where}: expected an IDX header of {header} bytes for {ndim} dimensions, found "
            f"{len(raw)} bytes; the file is truncated"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header declares"
        raise DatasetError(
            f"{where}: expected {expected:,} bytes for a {dtype.name} array of shape {shape}, found "
            f"{len(raw):,} bytes; the file is {problem}, download or install it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
