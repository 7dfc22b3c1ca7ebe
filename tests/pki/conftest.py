"""Fixtures of the PKI tests: a federation with a CA, a server and a client, and a CLI runner."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fedra.cli.main import app
from fedra.pki import init_ca, issue


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation directory with a CA, server ``srv`` (localhost, 127.0.0.1, 10.231.0.1) and client
    ``site-01`` (in ``issued/srv.crt``, ``issued/site-01.key``, ...); shared by a module: do not change it."""
    root = tmp_path_factory.mktemp("fed") / "federation"
    init_ca(root)
    issue(root, "server", "srv", sans=["localhost", "127.0.0.1", "10.231.0.1"])
    issue(root, "client", "site-01")
    return root


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A federation directory with a CA only, for tests that change it."""
    root = tmp_path / "federation"
    init_ca(root)
    return root


@pytest.fixture(autouse=True)
def _restore_fedra_logger() -> Iterator[None]:
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
    """``cli(*args)`` runs ``fedra ARGS`` in this process (as tests/cli's fixture of the same name)."""
    return _fedra
