"""Framework adapters: a model framework's parameters as named numpy arrays, and back.

``fedra.frameworks.torch`` (PyTorch ``state_dict``, dtype-preserving) and ``fedra.frameworks.numpy``
(a model that *is* a dict of arrays). Adapters are looked up by name so that importing fedra never
imports a framework it does not use.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from typing import Any, Protocol

import numpy as np

from fedra.errors import ConfigError

__all__ = ["FRAMEWORKS", "Framework", "detect", "get"]

#: name -> module that defines ``ADAPTER``; the import happens only when the framework is used.
FRAMEWORKS: dict[str, str] = {"torch": "fedra.frameworks.torch", "numpy": "fedra.frameworks.numpy"}


class Framework(Protocol):
    """What the client app needs from a model framework."""

    name: str

    def setup_worker(self) -> None:
        """Once per process: threads, determinism flags."""

    def seed(self, seed: int) -> None:
        """Seed the framework's global generators before a task."""

    def get_arrays(self, model: Any) -> dict[str, np.ndarray]: ...

    def set_arrays(self, model: Any, arrays: Mapping[str, np.ndarray]) -> None: ...

    def prepare(self, x: np.ndarray, y: np.ndarray) -> Any:
        """The default data object handed to ``train``/``evaluate`` when the user gives no ``load``."""


def get(name: str) -> Framework:
    if name not in FRAMEWORKS:
        raise ConfigError(f"framework: expected one of {', '.join(FRAMEWORKS)}, got {name!r}")
    try:
        module = import_module(FRAMEWORKS[name])
    except ImportError as exc:
        raise ConfigError(f"framework {name!r} is not installed ({exc}); install it, e.g. "
                          f"pip install 'fedra[{name}]'") from exc
    adapter: Framework = module.ADAPTER
    return adapter


def detect(model: Any) -> str:
    """The framework of a model object: ``torch`` for an ``nn.Module``, ``numpy`` for a dict of arrays."""
    if isinstance(model, dict) and all(isinstance(v, np.ndarray) for v in model.values()):
        return "numpy"
    for klass in type(model).__mro__:
        if klass.__module__.startswith("torch.nn") and klass.__name__ == "Module":
            return "torch"
    raise ConfigError(f"cannot tell the framework of a model of type {type(model).__name__}: expected a "
                      "torch.nn.Module or a dict of numpy arrays; set job.framework in the job spec")
