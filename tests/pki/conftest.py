"""Fixtures of the PKI tests: a federation with a CA, a server and a client, (the CLI runner is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
