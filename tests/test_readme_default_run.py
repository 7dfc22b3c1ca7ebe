"""End to end: the README's default run, through the installed ``fedra`` command, as a new user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_default_run_reaches_90_percent(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    assert "./scripts/demo" in readme and "./scripts/test" in readme
    assert "examples/digits/job.toml" in (REPO / "scripts" / "demo").read_text()
    fedra = shutil.which("fedra", path=str(Path(sys.executable).parent))
    assert fedra is not None, "the fedra console script is not installed next to this Python"
    out = subprocess.run([fedra, "simulate", str(REPO / "examples/digits/job.toml"), "--output", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    final = re.search(r"final accuracy: ([0-9.]+)", out.stdout)
    assert final is not None, out.stdout
    assert float(final.group(1)) >= 0.90
    (run_dir,) = tmp_path.iterdir()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == list(range(1, 21))
    assert all(x["accepted"] == 10 for x in lines)
    assert lines[-1]["eval_metrics"]["accuracy"] == pytest.approx(float(final.group(1)), abs=1e-3)
    assert {p.name for p in run_dir.iterdir()} >= {"job.toml", "metrics.jsonl", "model.safetensors", "plot.png"}
