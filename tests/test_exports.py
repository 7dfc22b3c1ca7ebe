"""Public API hygiene: every public package has a sorted ``__all__`` naming things that exist, and the
composable policy classes are final (extend by composition, not inheritance)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["fedra", "fedra.records", "fedra.aggregation", "fedra.strategy", "fedra.transport", "fedra.runtime",
            "fedra.simulation", "fedra.data", "fedra.frameworks", "fedra.observe", "fedra.errors", "fedra.job",
            "fedra.app", "fedra.pki", "fedra.transport.grpc", "fedra.privacy", "fedra.secagg", "fedra.attacks", "fedra.linux", "fedra.deploy"]


def isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022 order)."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert list(exported) == sorted(exported, key=isort_key), f"{name}.__all__ is not sorted"
    for item in exported:
        assert hasattr(module, item), f"{name}.__all__ names {item!r}, which does not exist"


def test_policy_classes_are_final() -> None:
    from fedra.attacks import AttackConfig
    from fedra.privacy import Accountant, AdaptiveClipping, DPConfig, DPFedAvg
    from fedra.secagg import ClientProtocol, SecAggConfig, SecAggResult, ServerProtocol
    from fedra.simulation import ProcessPoolTransport
    from fedra.strategy import (
        Aggregator,
        FractionSampler,
        RoundAggregate,
        ServerOptimizer,
        Strategy,
    )
    from fedra.transport import FunctionTransport

    for klass in (Strategy, Aggregator, FractionSampler, ServerOptimizer, RoundAggregate, FunctionTransport,
                  ProcessPoolTransport, AttackConfig, Accountant, AdaptiveClipping, DPConfig, DPFedAvg,
                  ClientProtocol, SecAggConfig, SecAggResult, ServerProtocol):
        assert getattr(klass, "__final__", False), f"{klass.__name__} should be @final"


def test_importing_fedra_core_pulls_in_no_framework_or_plotting() -> None:
    code = ("import sys, fedra.simulation, fedra.cli.main, fedra.data; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'sklearn', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_client_side_loads_no_accountant_scipy_or_plotting() -> None:
    """A small device runs `fedra client`: importing the CLI and the runtime stays light (issue 5, point 4)."""
    code = ("import sys, fedra.cli.main, fedra.runtime, fedra.privacy, fedra.transport.grpc; "
            "print(sorted(m for m in "
            "('scipy', 'dp_accounting', 'sklearn', 'matplotlib', 'torch', 'sqlalchemy', 'cryptography') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_pickle_anywhere_in_the_package() -> None:
    from pathlib import Path

    import fedra

    root = Path(fedra.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        for bad in ("import pickle", "from pickle", "cloudpickle", "allow_pickle=True", "torch.load(", "eval("):
            assert bad not in text, f"{path}: {bad}"
