"""Shared test fixtures: a seeded generator, the ``fedra`` CLI runner, and fedra's logger left as found."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner, Result

from fedra.cli.main import app


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


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
