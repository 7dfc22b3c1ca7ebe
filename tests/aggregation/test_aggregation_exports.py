"""The public surface of fedra.aggregation: a sorted __all__, final classes, and a pure import graph."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types

import fedra.aggregation as aggregation

EXPECTED = {
    "Arrays",
    "UpdateScores",
    "WeightedMeanAccumulator",
    "bulyan",
    "centered_clip",
    "coordinate_median",
    "fedadagrad_step",
    "fedadam_step",
    "fedavgm_step",
    "fedyogi_step",
    "fltrust",
    "initial_second_moment",
    "krum",
    "krum_scores",
    "multi_krum",
    "norm_bound",
    "proximal_gradient_np",
    "proximal_term_np",
    "robust_zscores",
    "trimmed_mean",
    "update_scores",
    "weighted_mean",
}


def test_all_is_sorted_unique_and_complete() -> None:
    names = aggregation.__all__
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED
    public = {
        n for n, v in vars(aggregation).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public == set(names)
    for name in names:
        assert getattr(aggregation, name) is not None


def test_concrete_classes_are_final() -> None:
    for name in aggregation.__all__:
        obj = getattr(aggregation, name)
        if inspect.isclass(obj):
            assert getattr(obj, "__final__", False), f"{name} should be @final"


def test_numeric_functions_take_hyperparameters_by_keyword_only() -> None:
    keyword_only = {
        "trimmed_mean": {"trim_fraction"},
        "krum_scores": {"num_byzantine"},
        "krum": {"num_byzantine"},
        "multi_krum": {"num_byzantine", "num_selected"},
        "bulyan": {"num_byzantine"},
        "centered_clip": {"center", "tau", "iterations"},
        "norm_bound": {"max_norm"},
        "fltrust": {"server_update"},
        "update_scores": {"aggregate", "num_neighbours"},
        "robust_zscores": {"min_scale"},
        "fedavgm_step": {"params", "delta", "momentum", "lr", "beta"},
        "fedadagrad_step": {"params", "delta", "m", "v", "lr", "beta1", "tau"},
        "fedadam_step": {"params", "delta", "m", "v", "lr", "beta1", "beta2", "tau"},
        "fedyogi_step": {"params", "delta", "m", "v", "lr", "beta1", "beta2", "tau"},
        "initial_second_moment": {"tau"},
        "proximal_term_np": {"mu"},
        "proximal_gradient_np": {"mu"},
    }
    for name, expected in keyword_only.items():
        params = inspect.signature(getattr(aggregation, name)).parameters.values()
        assert {p.name for p in params if p.kind is p.KEYWORD_ONLY} == expected, name


def test_public_functions_have_docstrings_citing_or_explaining() -> None:
    for name in aggregation.__all__:
        obj = getattr(aggregation, name)
        if callable(obj) and name != "Arrays":
            doc = inspect.getdoc(obj) or ""
            assert "Returns" in doc or "Parameters" in doc, name


def test_import_pulls_in_no_other_fedra_layer_or_framework() -> None:
    code = (
        "import json, sys\n"
        "import fedra\n"
        "before = set(sys.modules)\n"
        "import fedra.aggregation\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = json.loads(out.stdout)
    fedra_modules = {m for m in added if m.split(".")[0] == "fedra"}
    assert fedra_modules <= {
        "fedra.errors", "fedra.aggregation", "fedra.aggregation._mean", "fedra.aggregation._robust",
        "fedra.aggregation._optimizers", "fedra.aggregation._defences", "fedra.aggregation._scores",
    }
    assert "fedra.aggregation._mean" in fedra_modules
    roots = {m.split(".")[0] for m in added}
    assert not roots & {"torch", "grpc", "typer", "rich", "matplotlib", "sklearn", "logging"}
