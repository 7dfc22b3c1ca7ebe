"""``fedra simulate`` end to end on scaffolded jobs, its errors and exit codes, resume, start-up imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from typer.testing import Result

import fedra.simulation
from fedra import __version__
from fedra.errors import AggregationError
from fedra.job import load_job
from fedra.runtime import CheckpointStore, RunResult, model_digest

Cli = Callable[..., Result]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FEDRA_SCRIPT = Path(sys.executable).parent / "fedra"


def run_dir_of(result: Result) -> Path:
    """The run directory ``fedra simulate`` reported."""
    found = re.findall(r"run directory: (\S+)", result.stdout)
    assert found, result.output
    return Path(found[-1])


def final_accuracy(result: Result) -> float:
    found = re.findall(r"final accuracy: ([0-9.]+)", result.stdout)
    assert found, result.output
    return float(found[-1])


def metrics_rows(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def write_job(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(body)
    return path


# -- a run and what it leaves ------------------------------------------------------------------------

def test_simulate_writes_a_complete_run_directory(cli: Cli, numpy_job: Path, tmp_path: Path) -> None:
    result = cli("simulate", numpy_job, "--rounds", "3", "--workers", "2", "--output", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = run_dir_of(result)
    assert run.parent == tmp_path / "runs"
    assert re.fullmatch(r"digits-np-\d{8}-\d{6}", run.name)
    assert {"job.toml", "metrics.jsonl", "model.safetensors", "plot.png", "checkpoint"} <= {
        p.name for p in run.iterdir()}

    rows = metrics_rows(run)
    assert [r["round"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert isinstance(row["time"], str) and row["completed"] is True
        assert set(row["eval_metrics"]) == {"accuracy", "loss"}  # type: ignore[arg-type]
        assert "loss" in row["train_metrics"]  # type: ignore[operator]

    arrays = safetensors.numpy.load_file(run / "model.safetensors")
    assert {k: (a.dtype, a.shape) for k, a in arrays.items()} == {
        "w": (np.float32, (64, 10)), "b": (np.float32, (10,))}
    with safetensors.safe_open(run / "model.safetensors", framework="numpy") as f:
        meta = f.metadata()
    assert meta["fedra.round"] == "3" and meta["fedra.job"] == "digits-np"
    assert meta["fedra.digest"] == model_digest({"w": arrays["w"], "b": arrays["b"]})

    assert (run / "plot.png").read_bytes()[:8] == PNG_MAGIC

    spec = load_job(run / "job.toml")
    assert spec.job.rounds == 3 and spec.simulation.workers == 2
    assert spec.job.name == "digits-np"
    assert Path(spec.module_path()) == numpy_job.parent / "task.py"  # absolute: runs from anywhere
    assert spec.job.output_dir == str(tmp_path / "runs")

    assert "per-round metrics" in result.stdout
    assert 0 < final_accuracy(result) <= 1
    assert CheckpointStore(run / "checkpoint").load().round == 3  # type: ignore[union-attr]


def test_default_numpy_scaffold_reaches_a_sensible_accuracy(cli: Cli, numpy_job: Path) -> None:
    result = cli("simulate", numpy_job, "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert final_accuracy(result) > 0.85
    # quiet: the final summary and where the run went, nothing else
    assert len(result.stdout.splitlines()) == 2, result.stdout
    run = run_dir_of(result)
    assert run.parent == numpy_job.parent / "runs"  # job.output_dir, relative to the job file
    assert len(metrics_rows(run)) == load_job(numpy_job).job.rounds


@pytest.mark.slow
def test_default_torch_scaffold_reaches_a_sensible_accuracy(cli: Cli, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    assert cli("new", "digits-torch", "--dir", tmp_path, "--framework", "torch").exit_code == 0
    result = cli("simulate", tmp_path / "digits-torch" / "job.toml", "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert final_accuracy(result) > 0.85


def test_simulate_accepts_the_job_directory(cli: Cli, numpy_job: Path, tmp_path: Path) -> None:
    result = cli("simulate", numpy_job.parent, "-r", "1", "-w", "1", "-o", tmp_path / "r", "-q")
    assert result.exit_code == 0, result.output
    assert len(metrics_rows(run_dir_of(result))) == 1


# -- resume ------------------------------------------------------------------------------------------

def test_resume_continues_from_the_checkpoint(cli: Cli, numpy_job: Path, tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    first = cli("simulate", numpy_job, "--rounds", "2", "--workers", "1", "--run-dir", run)
    assert first.exit_code == 0, first.output
    assert CheckpointStore(run / "checkpoint").load().round == 2  # type: ignore[union-attr]

    second = cli("-v", "simulate", numpy_job, "--rounds", "3", "--workers", "1", "--run-dir", run)
    assert second.exit_code == 0, second.output
    assert run_dir_of(second) == run
    assert "resuming after round 2" in second.stdout
    assert "INFO" in second.stderr and "INFO" not in first.stderr  # -v shows fedra's INFO log records
    assert [r["round"] for r in metrics_rows(run)] == [1, 2, 3]
    assert CheckpointStore(run / "checkpoint").load().round == 3  # type: ignore[union-attr]
    assert load_job(run / "job.toml").job.rounds == 3

    # a seeded run resumed after round 2 ends bit-identical to one that ran 3 rounds straight
    straight = cli("simulate", numpy_job, "--rounds", "3", "--workers", "2", "--run-dir",
                     tmp_path / "straight")
    assert straight.exit_code == 0, straight.output
    digest = [safetensors.safe_open(d / "model.safetensors", framework="numpy").metadata()["fedra.digest"]
              for d in (run, tmp_path / "straight")]
    assert digest[0] == digest[1]


def test_resume_refuses_fewer_rounds_than_the_checkpoint(cli: Cli, numpy_job: Path,
                                                        tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli("simulate", numpy_job, "-r", "2", "-w", "1", "--run-dir", run, "-q").exit_code == 0
    result = cli("simulate", numpy_job, "-r", "1", "-w", "1", "--run-dir", run)
    assert result.exit_code == 78
    assert "after round 2" in result.stderr and "--rounds 2" in result.stderr


# -- errors and exit codes ---------------------------------------------------------------------------

GOOD = '[job]\nname = "t"\nmodule = "task.py"\nrounds = 2\n'


@pytest.mark.parametrize(("body", "field", "shown"), [
    (GOOD + "roundz = 3\n", "job.roundz", "unknown field"),
    (GOOD + "[data]\nnum_clients = 0\n", "data.num_clients", "got 0"),
    (GOOD + '[strategy]\naggregator = "avg"\n', "strategy.aggregator", "'avg'"),
])
def test_bad_job_spec_exits_78_naming_the_field(cli: Cli, tmp_path: Path, body: str, field: str,
                                                shown: str) -> None:
    result = cli("simulate", write_job(tmp_path, body), "--output", tmp_path / "runs")
    assert result.exit_code == 78
    assert field in result.stderr and shown in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_bad_override_exits_78_naming_the_field(cli: Cli, numpy_job: Path, tmp_path: Path) -> None:
    result = cli("simulate", numpy_job, "--rounds", "0", "--output", tmp_path / "runs")
    assert result.exit_code == 78
    assert "job.rounds" in result.stderr and "command-line" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_missing_job_file_exits_with_a_clear_message(cli: Cli, tmp_path: Path) -> None:
    result = cli("simulate", tmp_path / "nope.toml")
    assert result.exit_code != 0
    assert "nope.toml" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.output


def test_console_script_maps_errors_to_exit_codes(tmp_path: Path) -> None:
    bad = write_job(tmp_path, GOOD + "[client]\nepochs = -1\n")
    out = subprocess.run([FEDRA_SCRIPT, "simulate", bad], capture_output=True, text=True, timeout=60)
    assert out.returncode == 78
    assert "client.epochs" in out.stderr and "Traceback" not in out.stderr
    missing = subprocess.run([FEDRA_SCRIPT, "simulate", tmp_path / "missing.toml"], capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 78 and "not found" in missing.stderr


def test_failure_during_a_run_exits_with_the_error_class_code(
        cli: Cli, numpy_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> RunResult:
        raise AggregationError("expected at least 1 update, got 0 [all rejected]")

    monkeypatch.setattr(fedra.simulation, "simulate", fail)
    result = cli("simulate", numpy_job, "--output", tmp_path / "runs")
    assert result.exit_code == 75
    assert "error: expected at least 1 update, got 0 [all rejected]" in result.stderr
    assert "Traceback" not in result.output
    # no round completed: the run directory made for this run is removed, not left behind empty
    assert "removed the run directory" in result.stderr
    assert list((tmp_path / "runs").iterdir()) == []


def test_interrupt_exits_130_and_says_how_to_resume(
        cli: Cli, numpy_job: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = fedra.simulation.simulate

    def interrupted(job: object, *, observers: object, run_dir: Path) -> RunResult:
        real(job.model_copy(update={"job": job.job.model_copy(update={"rounds": 1})}),  # type: ignore[attr-defined]
             observers=observers, run_dir=run_dir)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(fedra.simulation, "simulate", interrupted)
    run = tmp_path / "run"
    result = cli("simulate", numpy_job, "--rounds", "3", "--workers", "1", "--run-dir", run)
    assert result.exit_code == 130
    assert f"--rounds 3 --run-dir {run}" in result.stderr
    monkeypatch.setattr(fedra.simulation, "simulate", real)
    resumed = cli("simulate", numpy_job, "--rounds", "3", "--workers", "1", "--run-dir", run)
    assert resumed.exit_code == 0, resumed.output
    assert [r["round"] for r in metrics_rows(run)] == [1, 2, 3]


def test_version(cli: Cli) -> None:
    result = cli("version")
    assert result.exit_code == 0 and result.stdout.strip() == f"fedra {__version__}"


# -- start-up ----------------------------------------------------------------------------------------

def test_cli_import_pulls_in_no_model_framework_nor_matplotlib() -> None:
    code = ("import sys, fedra.cli.main; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_run_where_every_client_fails_exits_75_with_the_reason(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "task.py").write_text(
        "import numpy as np\n"
        "def model():\n    return {'w': np.zeros(2)}\n"
        "def train(m, d, c):\n    raise RuntimeError('no GPU here')\n"
        "def evaluate(m, d):\n    return {}\n")
    job = write_job(tmp_path, '[job]\nname = "bad"\nmodule = "task.py"\nrounds = 2\n'
                              '[data]\nnum_clients = 3\n[simulation]\nworkers = 1\n')
    result = cli("simulate", job, "--output", tmp_path / "runs")
    assert result.exit_code == 75, result.output
    assert "no round completed" in result.output
    assert "train(): RuntimeError: no GPU here (x6)" in result.output
