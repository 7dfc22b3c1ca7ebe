"""A run's learning curves as a PNG: accuracy per round on the left, loss per round on the right."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedra.runtime import RoundRecord

__all__ = ["write_plot"]


def _series(records: Sequence[RoundRecord], which: str, key: str) -> tuple[list[int], list[float]]:
    """Rounds and values of one metric, for the rounds that report it."""
    xs, ys = [], []
    for rec in records:
        metrics = rec.eval_metrics if which == "eval" else rec.train_metrics
        if key in metrics:
            xs.append(rec.round)
            ys.append(metrics[key])
    return xs, ys


def _panel(ax: Any, records: Sequence[RoundRecord], lines: Sequence[tuple[str, str]], title: str) -> None:
    """Draw each ``(which, key)`` metric on ``ax``; an empty panel says so instead of warning."""
    from matplotlib.ticker import MaxNLocator

    values: list[float] = []
    for which, key in lines:
        xs, ys = _series(records, which, key)
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=f"{which} {key}")
        values += ys
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if lines:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    finite = [v for v in values if math.isfinite(v)]
    if title == "accuracy" and finite and all(0 <= v <= 1 for v in finite):
        ax.set_ylim(0, 1.02)


def write_plot(records: Sequence[RoundRecord], path: str | os.PathLike[str], *, title: str | None = None
               ) -> Path:
    """Write a PNG of the per-round metrics of ``records`` to ``path`` and return the path.

    The left panel shows the accuracy-like metrics (every metric whose name does not contain "loss"),
    the right panel the losses: centralised evaluation metrics, and the clients' mean training loss.

    Parameters
    ----------
    records : sequence of RoundRecord
        The rounds to draw, e.g. the driver's records or :func:`fedra.observe.read_jsonl`'s.
    path : str or os.PathLike
        The PNG to write; its directory must exist.
    title : str, optional
        A title over both panels, e.g. the job's name.
    """
    # matplotlib takes about half a second to import: only runs that plot pay for it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    eval_keys = sorted({k for r in records for k in r.eval_metrics})
    train_keys = sorted({k for r in records for k in r.train_metrics})
    acc_lines = [("eval", k) for k in eval_keys if "loss" not in k]
    acc_lines += [("train", k) for k in train_keys if k == "accuracy"]
    loss_lines = [("eval", k) for k in eval_keys if "loss" in k]
    loss_lines += [("train", k) for k in train_keys if "loss" in k]

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    _panel(left, records, acc_lines, "accuracy")
    _panel(right, records, loss_lines, "loss")
    if title:
        fig.suptitle(title)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    return out
