"""The observers on hand-made round records: console output, the metrics file, the plot."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fedra.errors import RecordError
from fedra.observe import ConsoleObserver, JsonlObserver, read_jsonl, write_plot
from fedra.runtime import RoundRecord, RunInfo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def record(rnd: int, *, acc: float | None = None, failures: dict[str, int] | None = None) -> RoundRecord:
    acc = 0.5 + rnd / 1000 if acc is None else acc
    return RoundRecord(round=rnd, sampled=10, replies=10, accepted=10 - sum((failures or {}).values()),
                       failures=dict(failures or {}), completed=True, train_metrics={"loss": 1.0 / rnd},
                       eval_metrics={"accuracy": acc, "loss": 2.0 / rnd}, num_examples=1000,
                       seconds={"total": 0.25})


def info(rounds: int, start: int = 0) -> RunInfo:
    return RunInfo(rounds=rounds, start_round=start, num_clients=10, num_parameters=650, model_bytes=2600)


def console_run(records: list[RoundRecord], *, quiet: bool = False, start: int = 0,
                terminal: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=terminal, color_system=None)
    obs = ConsoleObserver(console, quiet=quiet)
    obs.on_run_start(info(records[-1].round if records else 1, start))
    for r in records:
        obs.on_round_end(r)
    obs.on_run_end(records)
    return out.getvalue()


# -- ConsoleObserver ---------------------------------------------------------------------------------

def test_console_prints_a_line_per_round_a_table_and_the_final_accuracy() -> None:
    text = console_run([record(1), record(2, failures={"client error: boom [x]": 2}), record(3, acc=0.953)])
    lines = text.splitlines()
    assert sum(line.startswith("round ") for line in lines) == 3
    round2 = next(line for line in lines if line.startswith("round 2/3"))
    assert "clients 8/10" in round2 and "failed 2" in round2 and "boom [x] x2" in round2
    assert "train loss 0.5000" in round2 and "accuracy 0.5020" in round2 and "0.25 s" in round2
    assert "per-round metrics" in text and "eval accuracy" in text
    assert lines[-1] == "final accuracy: 0.953"


def test_console_quiet_prints_only_the_final_summary() -> None:
    text = console_run([record(1), record(2, acc=0.91)], quiet=True)
    assert text.splitlines() == ["final accuracy: 0.910"]


def test_console_without_accuracy_prints_no_final_line() -> None:
    rec = RoundRecord(round=1, sampled=2, accepted=2, completed=True, eval_metrics={"mse": 0.5})
    text = console_run([rec])
    assert "final accuracy" not in text and "mse" in text


def test_console_table_of_many_rounds_shows_the_first_5_and_last_10() -> None:
    text = console_run([record(r) for r in range(1, 41)])
    table = text[text.index("per-round metrics"):]
    rows = [line.split("│")[1].strip() for line in table.splitlines() if line.count("│") > 2]
    shown = [int(r) for r in rows if r.isdigit()]
    assert shown == [1, 2, 3, 4, 5, *range(31, 41)]
    assert "..." in rows


def test_console_shows_every_round_up_to_30() -> None:
    text = console_run([record(r) for r in range(1, 31)])
    table = text[text.index("per-round metrics"):]
    rows = [line.split("│")[1].strip() for line in table.splitlines() if line.count("│") > 2]
    assert [int(r) for r in rows if r.isdigit()] == list(range(1, 31))


def test_console_shows_a_progress_bar_on_a_terminal_only() -> None:
    recs = [record(1), record(2, acc=0.75)]
    on_terminal = console_run(recs, terminal=True)
    assert "2/2" in on_terminal and "accuracy 0.7500" in on_terminal
    assert not any(line.startswith("rounds") for line in console_run(recs).splitlines())


def test_console_close_is_idempotent_and_stops_the_bar() -> None:
    obs = ConsoleObserver(Console(file=io.StringIO(), force_terminal=True))
    obs.on_run_start(info(5, start=2))
    obs.close()
    obs.close()
    assert obs._progress is None


# -- JsonlObserver -----------------------------------------------------------------------------------

def test_jsonl_writes_one_flushed_line_per_round(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "metrics.jsonl"
    obs = JsonlObserver(path)
    obs.on_run_start(info(2))
    obs.on_round_end(record(1))
    # flushed at once: readable while the run goes on
    assert len(path.read_text().splitlines()) == 1
    obs.on_round_end(record(2))
    obs.on_run_end([])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0] == {**record(1).to_json(), "time": rows[0]["time"]}
    assert rows[0]["time"].endswith("+00:00")


def test_jsonl_resume_appends_and_drops_rounds_after_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    obs = JsonlObserver(path)
    obs.on_run_start(info(3))
    for r in (1, 2, 3):
        obs.on_round_end(record(r))
    obs.close()
    with path.open("a") as f:
        f.write('{"round": 4, "trunc')  # a line torn by a crash
    obs = JsonlObserver(path)
    obs.on_run_start(info(5, start=2))  # the checkpoint holds round 2: rounds 3+ are run again
    obs.on_round_end(record(3))
    obs.on_run_end([])
    assert [r.round for r in read_jsonl(path)] == [1, 2, 3]


def test_jsonl_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    obs = JsonlObserver(path)
    obs.on_run_start(info(1))
    obs.on_round_end(record(1, acc=math.nan))
    obs.close()
    row = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert row["eval_metrics"]["accuracy"] is None
    back = read_jsonl(path)[0]
    assert math.isnan(back.eval_metrics["accuracy"])
    assert back.train_metrics == {"loss": 1.0}


def test_read_jsonl_round_trips_records(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    obs = JsonlObserver(path)
    recs = [record(1, failures={"duplicate reply": 1}), record(2)]
    obs.on_run_start(info(2))
    for r in recs:
        obs.on_round_end(r)
    obs.close()
    assert read_jsonl(path) == recs


def test_read_jsonl_names_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 1}\n[1, 2]\n')
    with pytest.raises(RecordError, match="line 2"):
        read_jsonl(path)


# -- write_plot --------------------------------------------------------------------------------------

@pytest.mark.parametrize("records", [
    [record(r) for r in range(1, 6)],
    [],
    [RoundRecord(round=1, eval_metrics={"accuracy": math.nan})],
], ids=["rounds", "empty", "nan"])
def test_write_plot_writes_a_png(tmp_path: Path, records: list[RoundRecord]) -> None:
    out = write_plot(records, tmp_path / "plot.png")
    assert out == tmp_path / "plot.png"
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_importing_observe_imports_no_matplotlib_or_torch() -> None:
    code = ("import sys, fedra.observe; "
            "print(sorted(m for m in ('matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_sorted_and_classes_final() -> None:
    import fedra.observe

    assert fedra.observe.__all__ == sorted(fedra.observe.__all__)
    assert all(hasattr(fedra.observe, name) for name in fedra.observe.__all__)
    for cls in (ConsoleObserver, JsonlObserver):
        assert getattr(cls, "__final__", False), cls
