"""The ``.npz`` files of arrays ``x`` and ``y`` that ``fedra client --data`` and ``fedra server --root-data``
read: loaded without pickle, labels as int64."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedra.errors import DatasetError


def load_xy(path: Path, *, option: str, purpose: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from ``path``; a missing, unreadable or incomplete file is a :class:`DatasetError` that
    names ``option`` (and ``purpose``, e.g. what the data are for)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return np.asarray(f["x"]), np.asarray(f["y"]).astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:
        what = f" ({purpose})" if purpose else ""
        raise DatasetError(f"{option} {path}: expected an .npz file with arrays 'x' and 'y'{what}, got an error: "
                           f"{exc}") from exc
