"""The public surface of fedra.privacy: a sorted, complete __all__, final classes, keyword-only math,
and an import graph of numpy, scipy, dp_accounting and fedra.errors only."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import types

import fedra.privacy as privacy


def isort_key(name: str) -> tuple[int, str]:
    """Constants, then classes, then functions (ruff's RUF022 order)."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2), name


def test_all_is_sorted_unique_and_complete() -> None:
    names = privacy.__all__
    assert names == sorted(names, key=isort_key)
    assert len(names) == len(set(names))
    public = {n for n, v in vars(privacy).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"}
    assert public == set(names)
    for name in names:
        assert name in (privacy.__doc__ or ""), f"the package docstring should list {name}"


def test_concrete_classes_are_final() -> None:
    for name in ("Accountant", "AdaptiveClipping", "AuditResult", "DPConfig", "DPFedAvg"):
        assert getattr(getattr(privacy, name), "__final__", False), f"{name} should be @final"


def test_numeric_functions_take_parameters_by_keyword_and_document_them() -> None:
    positional_ok = {"clip_update": {"update"}, "add_gaussian_noise": {"arrays"}, "noised_mean": {"summed"},
                     "dp_fedavg": {"updates"}, "local_dp_update": {"update"}, "global_norm": {"update"},
                     "sum_updates": {"updates"}}
    for name in privacy.__all__:
        obj = getattr(privacy, name)
        if not inspect.isfunction(obj):
            continue
        params = inspect.signature(obj).parameters.values()
        positional = {p.name for p in params if p.kind is not p.KEYWORD_ONLY}
        assert positional == positional_ok.get(name, set()), name
        doc = inspect.getdoc(obj) or ""
        assert "Returns" in doc and "Parameters" in doc, name


def test_import_pulls_in_no_other_fedra_layer_or_framework() -> None:
    code = ("import sys, json, fedra.privacy; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('fedra.') or m in "
            "('torch', 'grpc', 'matplotlib', 'sklearn', 'pydantic', 'typer', 'rich', 'sqlalchemy'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert {m for m in loaded if not m.startswith("fedra.privacy")} <= {"fedra.errors"}, loaded
