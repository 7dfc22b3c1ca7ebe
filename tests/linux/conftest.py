"""Fixtures for the sandbox tests (helpers in ``sandbox_helpers.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sandbox_helpers import LIMITS, Lab, make_lab, require_sandbox


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One warm worker shared by a module's tests (a test that kills it gets a fresh one next time)."""
    require_sandbox(LIMITS)
    lab = make_lab(tmp_path_factory.mktemp("lab"), LIMITS)
    try:
        yield lab
    finally:
        lab.runner.close()


@pytest.fixture
def fedra_cgroups() -> Callable[[], set[str]]:
    """Lists the sandbox cgroups this process made that still exist (none should outlive a runner)."""
    def leftover() -> set[str]:
        found: set[str] = set()
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(","):
                d = Path("/sys/fs/cgroup") / (c or "unified") / path.lstrip("/")
                if d.is_dir():
                    found.update(str(p) for p in d.glob(f"fedra-sandbox-{os.getpid()}-*"))
        return found

    return leftover
