"""The metrics file: one JSON object per round, appended and flushed as each round ends.

Each line is :meth:`fedra.runtime.RoundRecord.to_json` plus ``"time"``, the wall-clock time the round
ended (ISO 8601, UTC). Non-finite numbers (a diverged loss) are written as ``null`` so every line stays
valid JSON. A resumed run continues the same file: on start, lines for rounds after the checkpoint the
run resumes from (written after that checkpoint, or half-written by a crash) are dropped first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, final

from fedra.errors import RecordError
from fedra.runtime import RoundRecord, RunInfo

__all__ = ["JsonlObserver", "read_jsonl"]

_FIELDS = frozenset(f.name for f in dataclasses.fields(RoundRecord))


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _keep_through(path: Path, last_round: int) -> None:
    """Drop lines of rounds after ``last_round`` (and unreadable ones), rewriting the file atomically."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            rnd = json.loads(line)["round"]
        except (ValueError, TypeError, KeyError):
            continue  # a line torn by a crash
        if isinstance(rnd, int) and rnd <= last_round:
            kept.append(line)
    if len(kept) == len(lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


@final
class JsonlObserver:
    """Writes one JSON line per round to ``path``, flushed as each round ends.

    The file is opened (append mode, parents created) when the run starts and closed when it ends.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def on_run_start(self, info: RunInfo) -> None:
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _keep_through(self.path, info.start_round)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives for the whole run

    def on_round_end(self, record: RoundRecord) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        row = {**record.to_json(), "time": datetime.now(UTC).isoformat(timespec="milliseconds")}
        self._file.write(json.dumps(_finite(row), allow_nan=False) + "\n")
        self._file.flush()

    def on_run_end(self, records: list[RoundRecord]) -> None:
        self.close()

    def close(self) -> None:
        """Close the file, if open. Safe to call more than once."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): math.nan if v is None else float(v) for k, v in value.items()}


def read_jsonl(path: str | os.PathLike[str]) -> list[RoundRecord]:
    """The round records of a metrics file written by :class:`JsonlObserver`, in file order.

    Raises
    ------
    RecordError
        A line is not a JSON object with an integer ``round``.
    """
    p = Path(path)
    records = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("round"), int):
                raise ValueError("expected a JSON object with an integer 'round'")
        except ValueError as exc:
            raise RecordError(f"{p}, line {number}: expected a round record, got {line[:80]!r} "
                              f"({exc})") from exc
        fields = {k: v for k, v in row.items() if k in _FIELDS}
        for key in ("train_metrics", "eval_metrics", "seconds"):
            fields[key] = _metrics(fields.get(key))
        records.append(RoundRecord(**fields))
    return records
