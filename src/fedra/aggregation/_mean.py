"""Weighted averaging of client models: FedAvg, batch and streaming.

McMahan, Moore, Ramage, Hampson and Agüera y Arcas, "Communication-Efficient Learning of Deep Networks
from Decentralized Data", AISTATS 2017 (FedAvg): the server's new model is the average of the client
models weighted by each client's number of examples, ``sum_i w_i x_i / sum_i w_i``.

Numerics
--------
One fold step is, per element and in a fixed accumulator dtype, ``acc = acc + w * x``. The accumulator dtype
is float32 for float16 and float32 arrays (float16 accumulates in float32) and float64 for float64, integer
and bool arrays; the weight is cast to it once. Two kernels, chosen per array by its size and dtypes only:

- large floating arrays whose inputs already have the accumulator dtype (at least ``_BLAS_MIN_SIZE``
  elements) use BLAS ``axpy`` (SciPy's BLAS): one fused pass per update, over a fixed grid of column
  blocks, threaded by BLAS;
- the rest use numpy: the product rounded to the accumulator dtype, then the sum, in cache-sized blocks
  split across threads.

Either way every element sees the same operations in the same order however the work is batched, so
``add``, ``add_many`` and :func:`weighted_mean` are bit-identical for the same sequence of updates (on one
BLAS build and thread count, for the axpy path).

The result divides the running sum by the total weight and casts back to each array's dtype; integer and
bool arrays (such as BatchNorm's ``num_batches_tracked``) are rounded to nearest, ties to even.

Speed
-----
Averaging is memory-bound: each update is read once while the accumulator's block stays in cache. numpy
has no fused multiply-add, so its kernel needs a second (in-cache) pass per update; ``axpy`` does not, which
is what brings a large fold near the streaming limit of the machine (see BENCHMARKS.md). Updates are assumed
finite; check them first (``fedra.records.check_finite``): a NaN or Inf propagates into the mean.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias, final

import numpy as np
import numpy.typing as npt

from fedra.errors import AggregationError

__all__ = ["Arrays", "WeightedMeanAccumulator", "weighted_mean"]

#: One client's model: named arrays (for example a PyTorch ``state_dict`` converted to numpy).
Arrays: TypeAlias = Mapping[str, npt.NDArray[Any]]

#: Bytes of accumulator per column block: the block and its product scratch stay in a core's L2/L3.
_BLOCK_BYTES: Final = 1 << 20
#: Element-updates (elements x updates) below which starting threads costs more than it saves.
_MIN_PARALLEL_WORK: Final = 1 << 21
#: Thread splits fall on multiples of this many elements, so threads never share a cache line.
_SPLIT_ALIGN: Final = 64
#: Arrays of at least this many elements (with inputs in the accumulator's dtype) fold with BLAS axpy.
_BLAS_MIN_SIZE: Final = 1 << 16
#: Elements per axpy call: a multiple of 64, large enough that BLAS threads it, small enough for cache.
_BLAS_BLOCK: Final = 1 << 20
#: Arrays of fewer elements fold with BLAS single-threaded, larger ones with BLAS's threads (see _fold_blas).
_BLAS_THREADED_SIZE: Final = 1 << 22
_F32_TINY: Final = float(np.finfo(np.float32).tiny)
_F32_MAX: Final = float(np.finfo(np.float32).max)


def _available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: Most threads one fold uses; memory bandwidth saturates long before many cores are busy.
_MAX_THREADS: Final = max(1, min(8, _available_cpus()))


def accumulator_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype in which arrays of ``dtype`` are summed: float32 at least, float64 for integers."""
    if dtype.kind == "f":
        return np.promote_types(dtype, np.float32)
    return np.dtype(np.float64)


def check_dtype(name: str, dtype: np.dtype[Any]) -> None:
    """Raise unless ``dtype`` is a real numeric or bool dtype."""
    if dtype.kind not in "biuf":
        raise AggregationError(
            f"array {name!r}: expected a bool, integer or floating dtype, got {dtype}"
        )


def check_like(name: str, array: npt.NDArray[Any], like: npt.NDArray[Any], *, what: str) -> None:
    """Raise unless ``array`` has the shape and dtype of ``like``."""
    if array.shape != like.shape:
        raise AggregationError(
            f"{what}, array {name!r}: expected shape {like.shape}, got {array.shape}"
        )
    if array.dtype != like.dtype:
        raise AggregationError(
            f"{what}, array {name!r}: expected dtype {like.dtype}, got {array.dtype}"
        )


def as_arrays(arrays: Arrays, *, what: str) -> dict[str, npt.NDArray[Any]]:
    """``arrays`` as a dict of ndarrays, checking that it is a mapping of str to arrays."""
    if not isinstance(arrays, Mapping):
        raise AggregationError(
            f"{what}: expected a mapping of names to arrays, got {type(arrays).__name__}"
        )
    out: dict[str, npt.NDArray[Any]] = {}
    for name, value in arrays.items():
        if not isinstance(name, str):
            raise AggregationError(f"{what}: expected str array names, got {name!r}")
        out[name] = np.asarray(value)
    return out


def check_same_names(names: Sequence[str], found: Mapping[str, object], *, what: str) -> None:
    """Raise unless ``found`` has exactly the array names ``names``."""
    if len(found) == len(names) and all(n in found for n in names):
        return
    missing = sorted(set(names) - set(found))
    extra = sorted(set(found) - set(names))
    raise AggregationError(
        f"{what}: expected arrays {sorted(names)}, got {sorted(found)} "
        f"(missing {missing}, unexpected {extra})"
    )


def check_updates(updates: Sequence[Arrays]) -> list[dict[str, npt.NDArray[Any]]]:
    """Check that ``updates`` is non-empty and all match the first; return them as dicts of arrays."""
    if isinstance(updates, Mapping) or not isinstance(updates, Sequence):
        raise AggregationError(
            f"expected a sequence of updates (mappings of arrays), got {type(updates).__name__}"
        )
    if len(updates) == 0:
        raise AggregationError("expected at least one update, got none")
    first = as_arrays(updates[0], what="update 0")
    if not first:
        raise AggregationError("update 0: expected at least one array, got none")
    for name, array in first.items():
        check_dtype(name, array.dtype)
    out = [first]
    names = list(first)
    for i in range(1, len(updates)):
        what = f"update {i}"
        arrays = as_arrays(updates[i], what=what)
        check_same_names(names, arrays, what=what)
        for name in names:
            check_like(name, arrays[name], first[name], what=what)
        out.append(arrays)
    return out


def check_weight(weight: object, *, what: str) -> float:
    """``weight`` as a float, checking that it is 0 or a positive number float32 can represent."""
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.integer | np.floating):
        raise AggregationError(f"{what}: expected a real number, got {type(weight).__name__}")
    w = float(weight)
    if not math.isfinite(w) or w < 0:
        raise AggregationError(f"{what}: expected a finite weight >= 0, got {w!r}")
    if w != 0 and not _F32_TINY <= w <= _F32_MAX:
        # Weights are cast to the float32 accumulator dtype; outside this range they would become 0 or inf.
        raise AggregationError(
            f"{what}: expected 0 or a weight in [{_F32_TINY:.3g}, {_F32_MAX:.3g}], got {w!r}"
        )
    return w


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """Check ``weights`` (one per update, finite, >= 0, not all zero) and return them as floats."""
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence | np.ndarray):
        raise AggregationError(
            f"expected a sequence of {n} weights, got {type(weights).__name__}"
        )
    if len(weights) != n:
        raise AggregationError(f"expected {n} weights (one per update), got {len(weights)}")
    out = [check_weight(w, what=f"weight {i}") for i, w in enumerate(weights)]
    if not any(out):
        raise AggregationError(
            f"expected at least one positive weight, got all {n} weights equal to 0"
        )
    return out


def cast_back(values: npt.NDArray[Any], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """``values`` (float, may be overwritten) in ``dtype``; integer and bool rounded to nearest, ties to even."""
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    rounded: npt.NDArray[Any] = np.rint(values, out=values)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        # float64 cannot hold every 64-bit integer: clip to the largest float that fits, so the cast
        # back never overflows.
        high = float(info.max)
        if int(high) > info.max:
            high = float(np.nextafter(high, 0.0))
        np.clip(rounded, float(info.min), high, out=rounded)
    return rounded.astype(dtype)


# A fold job: (flat accumulator, flat inputs, weights cast to the accumulator dtype, first, stop).
_Job: TypeAlias = tuple[
    npt.NDArray[Any], list[npt.NDArray[Any]], list[np.generic], int, int
]


def _fold_jobs(jobs: list[_Job]) -> None:
    """Run ``acc[lo:hi] += w * x[lo:hi]`` for every input, in cache-sized column blocks."""
    multiply, add = np.multiply, np.add
    for acc, xs, ws, lo, hi in jobs:
        block = max(_SPLIT_ALIGN, _BLOCK_BYTES // acc.itemsize)
        scratch = np.empty(min(block, hi - lo), dtype=acc.dtype)
        pairs = list(zip(xs, ws, strict=True))
        for b0 in range(lo, hi, block):
            b1 = min(b0 + block, hi)
            a = acc[b0:b1]
            t = scratch[: b1 - b0]
            for x, w in pairs:
                # Two roundings, product then sum, identical for every split of the work.
                multiply(x[b0:b1], w, out=t)
                add(a, t, out=a)


def _split(sizes: list[int], parts: int) -> list[list[tuple[int, int, int]]]:
    """Cut arrays of ``sizes`` into ``parts`` shares of about equal size: (array index, lo, hi)."""
    total = sum(sizes)
    target = -(-total // parts)
    shares: list[list[tuple[int, int, int]]] = [[] for _ in range(parts)]
    share, room = 0, target
    for index, size in enumerate(sizes):
        lo = 0
        while lo < size:
            if share == parts - 1:
                hi = size
            else:
                hi = min(size, lo + room)
                if hi < size:
                    hi = min(size, -(-hi // _SPLIT_ALIGN) * _SPLIT_ALIGN)
            shares[share].append((index, lo, hi))
            room -= hi - lo
            lo = hi
            if room <= 0 and share < parts - 1:
                share, room = share + 1, target
    return [s for s in shares if s]


def _axpy_kernel(dtype: np.dtype[Any]) -> Any:
    """BLAS ``axpy`` (``y <- a x + y``, one fused pass) for float32 or float64, from SciPy's BLAS."""
    from scipy.linalg import blas

    return blas.saxpy if dtype == np.float32 else blas.daxpy


def _uses_blas(acc: npt.NDArray[Any], xs: list[npt.NDArray[Any]]) -> bool:
    """Large arrays whose inputs already have the accumulator dtype fold with BLAS axpy."""
    return acc.size >= _BLAS_MIN_SIZE and acc.dtype.kind == "f" and all(x.dtype == acc.dtype for x in xs)


def _fold_blas(acc: npt.NDArray[Any], xs: list[npt.NDArray[Any]], ws: list[np.generic]) -> None:
    """``acc += w * x`` for each input, by BLAS axpy over a fixed grid of column blocks.

    numpy has no fused multiply-add, so its fold needs a second pass over each block; axpy reads each
    input once, with the running sum's block in cache, and BLAS threads it. The block grid depends only on
    the array's size, so every element sees the same kernel path however updates are batched: ``add``,
    ``add_many`` and ``weighted_mean`` stay bit-identical (for one BLAS build and thread count, below).

    Arrays under ``_BLAS_THREADED_SIZE`` elements fold with OpenBLAS single-threaded, larger ones with
    the threads it has. The choice depends on the array's size alone, and folds hold a lock, because
    axpy's bits depend on its thread count: OpenBLAS cuts the vector per thread, and the elements at the
    ends of the pieces take another code path (a few per million differ). Each array of a model thus
    always folds the same way, however its updates are batched. A server folds one reply, or the few
    that are ready, at a time, and for such arrays BLAS's threads cost more than they gave: waking them
    took longer than a 4 MB axpy (1.4 ms with two threads against 0.37 ms with one, idle 2-core machine),
    and between folds an idle one spun for its timeout, a sixth of all CPU in a profile of the 100 x 1M
    bench while the clients needed every cycle (bench/bench_network.py, BENCHMARKS.md). The threads are
    BLAS's, not ours: f2py holds the GIL through an axpy.
    """
    axpy = _axpy_kernel(acc.dtype)
    pairs = list(zip(xs, ws, strict=True))
    with _blas_lock:  # no other fold changes BLAS's threads under this one
        _set_blas_single_threaded(acc.size < _BLAS_THREADED_SIZE)
        probe = np.zeros(1, acc.dtype)
        if not np.shares_memory(axpy(probe, probe, a=1.0), probe):  # pragma: no cover - f2py copied y
            raise AggregationError("internal: BLAS axpy did not update the accumulator in place")
        for b0 in range(0, acc.size, _BLAS_BLOCK):
            a = acc[b0:b0 + _BLAS_BLOCK]
            for x, w in pairs:
                axpy(x[b0:b0 + _BLAS_BLOCK], a, a=w)


_blas_lock = threading.Lock()  # held through a BLAS fold, and while its threads are set
_blas_limit: Any = None  # while SciPy's OpenBLAS is held to one thread: what gives it its threads back
_blas_limiter: Any = None  # a threadpoolctl controller of SciPy's OpenBLAS (not numpy's), made on first use


def _set_blas_single_threaded(single: bool) -> None:
    """Hold SciPy's OpenBLAS to one thread, or give it back the threads it had (``_blas_lock`` held).

    It stays as the last fold left it rather than being restored after each one: each restore let its
    idle threads spin again. Only SciPy's copy of OpenBLAS is touched, the one the folds use; numpy's is
    not.
    """
    global _blas_limit, _blas_limiter
    if single and _blas_limit is None:
        if _blas_limiter is None:
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController()
            ours = [lib.filepath for lib in libs.lib_controllers
                    if lib.user_api == "blas" and "scipy" in Path(lib.filepath).parent.name]
            _blas_limiter = libs.select(filepath=ours) if ours else libs.select(user_api="blas")
        _blas_limit = _blas_limiter.limit(limits=1)
    elif not single and _blas_limit is not None:
        _blas_limit.restore_original_limits()
        _blas_limit = None


def _fold(
    accs: list[npt.NDArray[Any]],
    inputs: list[list[npt.NDArray[Any]]],
    weights: list[list[np.generic]],
) -> None:
    """Fold ``inputs[k][i] * weights[k][i]`` into the flat ``accs[k]``: large float arrays by BLAS axpy,
    the rest by numpy in cache-sized blocks, split across threads."""
    keep = []
    for k, (acc, xs) in enumerate(zip(accs, inputs, strict=True)):
        if xs and _uses_blas(acc, xs):
            _fold_blas(acc, xs, weights[k])
        else:
            keep.append(k)
    if len(keep) < len(accs):
        accs = [accs[k] for k in keep]
        inputs = [inputs[k] for k in keep]
        weights = [weights[k] for k in keep]
        if not accs:
            return
    sizes = [a.size for a in accs]
    work = sum(size * len(xs) for size, xs in zip(sizes, inputs, strict=True))
    if work == 0:
        return
    parts = max(1, min(_MAX_THREADS, work // _MIN_PARALLEL_WORK))
    shares = [
        [(accs[k], inputs[k], weights[k], lo, hi) for k, lo, hi in share]
        for share in _split(sizes, parts)
    ]
    if len(shares) == 1:
        _fold_jobs(shares[0])
        return
    errors: list[BaseException] = []

    def run(share: list[_Job]) -> None:
        try:
            _fold_jobs(share)
        except BaseException as exc:  # re-raised in the calling thread below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(share,), daemon=True) for share in shares[1:]]
    for worker in workers:
        worker.start()
    try:
        _fold_jobs(shares[0])
    finally:
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]


@final
class WeightedMeanAccumulator:
    """Streaming FedAvg: fold updates in one at a time, holding only the running weighted sum.

    Parameters
    ----------
    spec_like : Arrays
        A template with the names, shapes and dtypes of the model (for example the global model); its
        values are not read. Every update added must match it exactly.

    Notes
    -----
    Memory is one accumulator per array (float32 for float16/float32 arrays, float64 otherwise), never
    the updates. The same updates added in the same order give a bit-identical :meth:`result`, whether
    added one by one with :meth:`add` or in batches with :meth:`add_many`; :meth:`add_many` is faster
    because it reads each update once while the accumulator block stays in cache. Zero-weight updates are
    checked and counted but not read.

    Examples
    --------
    >>> import numpy as np
    >>> acc = WeightedMeanAccumulator({"w": np.zeros(2, np.float32)})
    >>> acc.add({"w": np.array([1.0, 2.0], np.float32)}, 1.0)
    >>> acc.add_many([({"w": np.array([4.0, 8.0], np.float32)}, 2.0)])
    >>> acc.result()["w"]
    array([3., 6.], dtype=float32)
    """

    __slots__ = ("_accs", "_count", "_dtypes", "_names", "_shapes", "_total", "_totals")

    def __init__(self, spec_like: Arrays) -> None:
        template = as_arrays(spec_like, what="template")
        if not template:
            raise AggregationError("template: expected at least one array, got none")
        self._names = list(template)
        self._shapes = {n: a.shape for n, a in template.items()}
        self._dtypes = {n: a.dtype for n, a in template.items()}
        for name, dtype in self._dtypes.items():
            check_dtype(name, dtype)
        self._accs = {
            n: np.zeros(a.size, dtype=accumulator_dtype(a.dtype)) for n, a in template.items()
        }
        self._count = 0
        self._total = 0.0
        # Sum of the weights as cast to each accumulator dtype: the divisor that makes a constant input exact.
        self._totals = {a.dtype: 0.0 for a in self._accs.values()}

    @property
    def count(self) -> int:
        """Number of updates added, zero-weight ones included."""
        return self._count

    @property
    def total_weight(self) -> float:
        """Sum of the weights added."""
        return self._total

    def add(self, arrays: Arrays, weight: float) -> None:
        """Fold one update into the running sum.

        Parameters
        ----------
        arrays : Arrays
            The client's model; names, shapes and dtypes must match the template.
        weight : float
            Its weight (typically its number of training examples); finite and >= 0.

        Raises
        ------
        AggregationError
            If the update does not match the template or the weight is invalid; nothing is folded.
        """
        self.add_many([(arrays, weight)])

    def add_many(self, items: Sequence[tuple[Arrays, float]]) -> None:
        """Fold several updates in one pass, in order; bit-identical to :meth:`add` on each in turn.

        Parameters
        ----------
        items : Sequence[tuple[Arrays, float]]
            ``(arrays, weight)`` pairs, for example the updates that arrived since the last call.

        Raises
        ------
        AggregationError
            If any update does not match the template or any weight is invalid; then nothing is folded.
        """
        if not self._accs:
            raise AggregationError("this accumulator was spent by take(); start a new one")
        if isinstance(items, Mapping) or not isinstance(items, Sequence):
            raise AggregationError(
                f"expected a sequence of (arrays, weight) pairs, got {type(items).__name__}"
            )
        checked: list[tuple[dict[str, npt.NDArray[Any]], float]] = []
        for i, item in enumerate(items):
            what = f"item {i}"
            if not isinstance(item, tuple) or len(item) != 2:
                raise AggregationError(f"{what}: expected an (arrays, weight) pair, got {item!r:.80}")
            arrays = as_arrays(item[0], what=what)
            weight = check_weight(item[1], what=f"{what} weight")
            check_same_names(self._names, arrays, what=what)
            for name in self._names:
                array = arrays[name]
                if array.shape != self._shapes[name] or array.dtype != self._dtypes[name]:
                    raise AggregationError(
                        f"{what}, array {name!r}: expected {self._dtypes[name]} of shape "
                        f"{self._shapes[name]}, got {array.dtype} of shape {array.shape}"
                    )
            checked.append((arrays, weight))
        live = [(arrays, w) for arrays, w in checked if w != 0]
        accs = [self._accs[n] for n in self._names]
        inputs = [[arrays[n].reshape(-1) for arrays, _ in live] for n in self._names]
        weights = [[acc.dtype.type(w) for _, w in live] for acc in accs]
        _fold(accs, inputs, weights)
        self._count += len(checked)
        for _, w in checked:
            self._total += w
            for dtype in self._totals:
                self._totals[dtype] += float(dtype.type(w))

    def result(self) -> dict[str, npt.NDArray[Any]]:
        """The weighted mean so far, each array in its template's shape and dtype.

        Returns
        -------
        dict[str, numpy.ndarray]
            New arrays, in the template's order; the accumulator can keep folding afterwards.

        Raises
        ------
        AggregationError
            If nothing was added, or the total weight is 0.
        """
        return self._mean(in_place=False)

    def take(self) -> dict[str, npt.NDArray[Any]]:
        """Like :meth:`result`, but computed in the accumulator's own memory, which the result then owns.

        Saves allocating and writing a second copy of the model, which matters for large models. The
        accumulator is spent afterwards: any further call raises :class:`AggregationError`.
        """
        out = self._mean(in_place=True)
        self._accs = {}
        return out

    def _mean(self, *, in_place: bool) -> dict[str, npt.NDArray[Any]]:
        if not self._accs:
            raise AggregationError("this accumulator was spent by take(); start a new one")
        if self._count == 0:
            raise AggregationError("expected at least one update, got none")
        if self._total == 0:
            raise AggregationError(
                f"expected a positive total weight, got 0.0 over {self._count} updates"
            )
        out: dict[str, npt.NDArray[Any]] = {}
        for name in self._names:
            acc = self._accs[name]
            divisor = acc.dtype.type(self._totals[acc.dtype])
            mean = np.divide(acc, divisor, out=acc) if in_place else np.divide(acc, divisor)
            out[name] = cast_back(mean, self._dtypes[name]).reshape(self._shapes[name])
        return out


def weighted_mean(updates: Sequence[Arrays], weights: Sequence[float]) -> dict[str, npt.NDArray[Any]]:
    """Weighted average of client models (FedAvg; McMahan et al., AISTATS 2017).

    Parameters
    ----------
    updates : Sequence[Arrays]
        Client models with the same array names, shapes and dtypes.
    weights : Sequence[float]
        One weight per update (typically its number of training examples): finite, >= 0, not all 0.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``sum_i w_i x_i / sum_i w_i`` for each array, in the first update's order and each array's dtype
        (integer and bool arrays rounded to nearest). Bit-identical to a :class:`WeightedMeanAccumulator`
        fed the same updates in the same order.

    Raises
    ------
    AggregationError
        If there are no updates, the updates do not match each other, or the weights are invalid.

    Examples
    --------
    >>> import numpy as np
    >>> weighted_mean([{"w": np.array([0.0, 2.0])}, {"w": np.array([4.0, 6.0])}], [3, 1])["w"]
    array([1., 3.])
    """
    checked = check_updates(updates)
    ws = check_weights(weights, len(checked))
    accumulator = WeightedMeanAccumulator(checked[0])
    accumulator.add_many(list(zip(checked, ws, strict=True)))
    return accumulator.take()
