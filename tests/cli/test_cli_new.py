"""``fedra new``: the scaffold, its templates as package data, and what it refuses."""

from __future__ import annotations

import ast
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from typer.testing import Result

from fedra.cli.new import TemplateKind, render
from fedra.frameworks.numpy import ArrayData
from fedra.job import load_job

Cli = Callable[..., Result]


@pytest.mark.parametrize("kind", list(TemplateKind))
def test_new_scaffolds_a_valid_job_and_task(cli: Cli, tmp_path: Path, kind: TemplateKind) -> None:
    result = cli("new", "my-job", "--dir", tmp_path, "--framework", kind.value)
    assert result.exit_code == 0, result.output
    target = tmp_path / "my-job"
    assert sorted(p.name for p in target.iterdir()) == ["job.toml", "task.py"]
    job = load_job(target / "job.toml")
    assert job.job.name == "my-job" and job.job.framework == kind.value
    assert job.module_path() == str(target / "task.py")
    tree = ast.parse((target / "task.py").read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"model", "train", "evaluate"} <= defined
    assert f"fedra simulate {target / 'job.toml'}" in result.stdout


def test_numpy_template_imports_numpy_only() -> None:
    tree = ast.parse(render(TemplateKind.numpy, "x")["task.py"])
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported == {"numpy"}


def test_templates_ship_as_package_data() -> None:
    root = files("fedra") / "templates"
    for kind in TemplateKind:
        names = sorted(item.name for item in (root / kind.value).iterdir())
        assert names == ["job.toml.tmpl", "task.py.tmpl"]


def test_new_refuses_an_existing_directory(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "task.py").write_text("# mine\n")
    result = cli("new", "taken", "--dir", tmp_path, "--framework", "numpy")
    assert result.exit_code == 78
    assert "already exists" in result.stderr and "taken" in result.stderr
    assert (tmp_path / "taken" / "task.py").read_text() == "# mine\n"
    assert not (tmp_path / "taken" / "job.toml").exists()


@pytest.mark.parametrize("name", ["bad name", ".dot", "sub/dir", 'quote"d', "x" * 64])
def test_new_refuses_an_invalid_job_name(cli: Cli, tmp_path: Path, name: str) -> None:
    result = cli("new", name, "--dir", tmp_path, "--framework", "numpy")
    assert result.exit_code == 78
    assert "expected a job name" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_new_rejects_an_unknown_framework(cli: Cli, tmp_path: Path) -> None:
    result = cli("new", "x", "--dir", tmp_path, "--framework", "jax")
    assert result.exit_code == 2
    assert "jax" in result.stderr


def _numpy_task() -> ModuleType:
    module = ModuleType("numpy_task")
    exec(compile(render(TemplateKind.numpy, "x")["task.py"], "task.py", "exec"), module.__dict__)
    return module


def test_numpy_template_gradient_matches_finite_differences() -> None:
    task = _numpy_task()
    rng = np.random.default_rng(0)
    data = ArrayData(rng.random((8, 64)), rng.integers(0, 10, 8))
    start = {"w": rng.normal(0, 0.1, (64, 10)), "b": rng.normal(0, 0.1, 10)}
    model = {k: v.copy() for k, v in start.items()}
    lr = 1e-3
    task.train(model, data, {"seed": 0, "lr": lr, "epochs": 1, "batch_size": 8, "proximal_mu": 0.0})
    eps = 1e-6
    for key, index in [("w", (3, 7)), ("w", (60, 0)), ("b", (2,))]:
        plus = {k: v.copy() for k, v in start.items()}
        minus = {k: v.copy() for k, v in start.items()}
        plus[key][index] += eps
        minus[key][index] -= eps
        numeric = (task.evaluate(plus, data)["loss"] - task.evaluate(minus, data)["loss"]) / (2 * eps)
        taken = (start[key][index] - model[key][index]) / lr
        assert taken == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_numpy_template_proximal_term_pulls_towards_the_global_model() -> None:
    task = _numpy_task()
    rng = np.random.default_rng(1)
    data = ArrayData(rng.random((64, 64)).astype(np.float32), rng.integers(0, 10, 64))
    config = {"seed": 3, "lr": 0.5, "epochs": 5, "batch_size": 8}
    moved = {}
    for mu in (0.0, 1.0):
        model = task.model()
        task.train(model, data, {**config, "proximal_mu": mu})
        assert model["w"].dtype == np.float32
        moved[mu] = float(np.linalg.norm(model["w"]))
    assert moved[1.0] < moved[0.0]
