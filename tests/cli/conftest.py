"""Fixtures of the command-line tests: a CLI runner, fedra's logger left as found, scaffolded jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fedra.cli.main import app


@pytest.fixture(autouse=True)
def _restore_fedra_logger() -> Iterator[None]:
    """The CLI configures the ``fedra`` logger; put it back so other tests' caplog sees what it expects."""
    logger = logging.getLogger("fedra")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


Cli = Callable[..., Result]


def _fedra(*args: str | Path) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def cli() -> Cli:
    """``cli(*args)`` runs ``fedra ARGS`` in this process; stdout and stderr are captured apart."""
    return _fedra


@pytest.fixture
def numpy_job(tmp_path: Path) -> Path:
    """A job scaffolded by ``fedra new --framework numpy``; returns its job.toml."""
    result = _fedra("new", "digits-np", "--dir", tmp_path, "--framework", "numpy")
    assert result.exit_code == 0, result.output
    return tmp_path / "digits-np" / "job.toml"
