"""The public surface of fedra.attacks: a sorted __all__, final classes, keyword-only hyperparameters,
docstrings that cite their paper, and an import graph limited to fedra.aggregation and fedra.errors."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types

import fedra.attacks as attacks


def isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name


def test_all_is_sorted_and_complete() -> None:
    names = attacks.__all__
    assert list(names) == sorted(names, key=isort_key)
    public = {n for n, v in vars(attacks).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(names)


def test_classes_are_final_and_functions_documented() -> None:
    for name in attacks.__all__:
        obj = getattr(attacks, name)
        if inspect.isclass(obj):
            assert getattr(obj, "__final__", False), f"{name} should be @final"
        elif callable(obj):
            doc = inspect.getdoc(obj) or ""
            assert "Returns" in doc and "Parameters" in doc, name


def test_hyperparameters_are_keyword_only() -> None:
    expected = {
        "sign_flip": set(),
        "gaussian_noise": {"sigma", "rng"},
        "scale": {"num_clients", "server_lr"},
        "alie": {"num_clients", "honest"},
        "alie_z": {"num_clients", "num_byzantine"},
        "ipm": {"epsilon", "honest"},
        "min_max": {"honest", "perturbation"},
        "min_sum": {"honest", "perturbation"},
        "flip_labels": {"num_classes", "mapping", "fraction", "rng"},
        "select_malicious": {"fraction", "seed"},
    }
    for name, kw in expected.items():
        params = inspect.signature(getattr(attacks, name)).parameters.values()
        assert {p.name for p in params if p.kind is p.KEYWORD_ONLY} == kw, name


def test_import_pulls_in_only_aggregation_and_errors() -> None:
    code = (
        "import json, sys\n"
        "import fedra\n"
        "before = set(sys.modules)\n"
        "import fedra.attacks\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = json.loads(out.stdout)
    fedra_modules = {m for m in added if m.split(".")[0] == "fedra"}
    assert all(m.startswith(("fedra.attacks", "fedra.aggregation", "fedra.errors")) for m in fedra_modules), fedra_modules
    assert not {m.split(".")[0] for m in added} & {"torch", "grpc", "typer", "rich", "matplotlib", "sklearn", "logging"}
