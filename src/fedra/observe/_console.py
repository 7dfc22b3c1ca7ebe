"""The console observer: a progress bar over rounds, a line per round, and a table at the end."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import final

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fedra.runtime import RoundRecord, RunInfo

__all__ = ["ConsoleObserver"]

#: Up to this many rounds the closing table shows every round; beyond, the first and last few.
_TABLE_ALL = 30
_TABLE_HEAD, _TABLE_TAIL = 5, 10


def _ordered(keys: Collection[str]) -> list[str]:
    """Metric names with accuracy and loss first, then the rest alphabetically."""
    first = [k for k in ("accuracy", "loss") if k in keys]
    return first + sorted(set(keys) - set(first))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metrics_text(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {_num(metrics[k])}" for k in _ordered(metrics))


def final_accuracy(records: Sequence[RoundRecord]) -> float | None:
    """The last evaluated accuracy among ``records``, if any round reported one."""
    for rec in reversed(records):
        if "accuracy" in rec.eval_metrics:
            return rec.eval_metrics["accuracy"]
    return None


@final
class ConsoleObserver:
    """Shows a run on a rich console.

    Parameters
    ----------
    console : rich.console.Console
        Where to print. A terminal also gets a live progress bar; a file or a pipe gets the lines only.
    quiet : bool, default False
        Print only the final summary (``final accuracy: ...``): no bar, no per-round lines, no table.

    Notes
    -----
    If a run ends by an exception, call :meth:`close` so the live progress bar releases the terminal.
    """

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._rounds = 0

    # -- Observer ------------------------------------------------------------------------------
    def on_run_start(self, info: RunInfo) -> None:
        self._rounds = info.rounds
        if self.quiet:
            return
        if info.start_round:
            self.console.print(f"resuming after round {info.start_round} of {info.rounds}")
        self.console.print(f"{info.num_clients:,} clients, model of {info.num_parameters:,} parameters "
                           f"({info.model_bytes / 1024:,.1f} KiB)")
        if not self.console.is_terminal:
            return  # a log file gets the lines alone: a bar drawn once at the end would be noise
        self._progress = Progress(
            TextColumn("[bold]rounds"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[latest]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = self._progress.add_task("rounds", total=info.rounds, completed=info.start_round,
                                             latest="")
        self._progress.start()

    def on_round_end(self, record: RoundRecord) -> None:
        if self.quiet:
            return
        self.console.print(self._line(record), highlight=False, soft_wrap=True)
        if self._progress is not None and self._task is not None:
            latest = _metrics_text({k: v for k, v in record.eval_metrics.items() if k in ("accuracy", "loss")})
            self._progress.update(self._task, completed=record.round, latest=latest)

    def on_run_end(self, records: list[RoundRecord]) -> None:
        self.close()
        if not self.quiet and records:
            self.console.print(self._table(records))
        acc = final_accuracy(records)
        if acc is not None:
            self.console.print(f"final accuracy: {acc:.3f}", highlight=False)

    # -- rendering -----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the live progress bar, if one is running. Safe to call more than once."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def _line(self, rec: RoundRecord) -> str:
        width = len(str(self._rounds or rec.round))
        parts = [f"round {rec.round:>{width}}/{self._rounds}",
                 f"clients {rec.accepted}/{rec.sampled}"]
        if "loss" in rec.train_metrics:
            parts.append(f"train loss {_num(rec.train_metrics['loss'])}")
        if rec.eval_metrics:
            parts.append(f"eval {_metrics_text(rec.eval_metrics)}")
        if rec.epsilon is not None:
            parts.append(f"epsilon {rec.epsilon:.4g} (delta {rec.delta:g})")
        parts.append(f"{rec.seconds.get('total', 0.0):.2f} s")
        line = "  ".join(parts)
        if rec.failures:
            reasons = "; ".join(f"{reason} x{count}" for reason, count in sorted(rec.failures.items()))
            line += f"  [yellow]failed {sum(rec.failures.values())}: {escape(reasons)}[/]"
        if not rec.completed:
            line += "  [yellow](model unchanged)[/]"
        if rec.stop_reason:
            line += f"\n[yellow]stopping: {escape(rec.stop_reason)}[/]"
        return line

    def _table(self, records: Sequence[RoundRecord]) -> Table:
        if len(records) <= _TABLE_ALL:
            shown: list[RoundRecord | None] = list(records)
        else:
            shown = [*records[:_TABLE_HEAD], None, *records[-_TABLE_TAIL:]]
        kept = [r for r in shown if r is not None]
        train_keys = _ordered({k for r in kept for k in r.train_metrics})
        eval_keys = _ordered({k for r in kept for k in r.eval_metrics})
        table = Table(title="per-round metrics", title_justify="left")
        table.add_column("round", justify="right")
        table.add_column("clients", justify="right")
        table.add_column("failed", justify="right")
        for k in train_keys:
            table.add_column(f"train {k}", justify="right")
        for k in eval_keys:
            table.add_column(f"eval {k}", justify="right")
        table.add_column("seconds", justify="right")
        for rec in shown:
            if rec is None:
                table.add_row(*["..."] * (4 + len(train_keys) + len(eval_keys)))
                continue
            table.add_row(
                str(rec.round),
                f"{rec.accepted}/{rec.sampled}",
                str(sum(rec.failures.values())) if rec.failures else "",
                *(_num(rec.train_metrics.get(k)) for k in train_keys),
                *(_num(rec.eval_metrics.get(k)) for k in eval_keys),
                f"{rec.seconds.get('total', 0.0):.2f}",
            )
        return table
