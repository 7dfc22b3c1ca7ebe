"""Fixtures of the command-line tests: scaffolded jobs (the CLI runner is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fedra.cli.main import app

Cli = Callable[..., Result]


def _fedra(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def numpy_job(tmp_path: Path) -> Path:
    """A job scaffolded by ``fedra new --framework numpy``; returns its job.toml."""
    result = _fedra("new", "digits-np", "--dir", tmp_path, "--framework", "numpy")
    assert result.exit_code == 0, result.output
    return tmp_path / "digits-np" / "job.toml"
