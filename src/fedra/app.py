"""The user's module, loaded and wrapped as a :class:`fedra.runtime.ClientApp`.

A user writes one small module::

    def model(): ...                       # required: a new model (torch.nn.Module or dict of arrays)
    def train(model, data, config): ...    # required: train in place; may return a dict of metrics
    def evaluate(model, data): ...         # required: return a dict of metrics ("accuracy", "loss", ...)
    def load(x, y): ...                    # optional: turn a partition's arrays into your data object

``config`` is the job's ``[client]`` table plus ``round``, ``seed`` and (in ``train``) ``client_id``. The app builds the model once and
keeps it, and keeps recently used partitions ready, so a worker does not rebuild them per task.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, final

import numpy as np

from fedra import frameworks
from fedra.data import Dataset
from fedra.errors import UserCodeError
from fedra.records import Scalar
from fedra.runtime import TaskResult

__all__ = ["UserApp", "load_user_module"]

_REQUIRED = ("model", "train", "evaluate")


def load_user_module(ref: str) -> ModuleType:
    """Import the user's module from a ``.py`` path or an importable module name."""
    try:
        if ref.endswith(".py"):
            path = Path(ref)
            if not path.is_file():
                raise UserCodeError(f"model module {ref}: file not found; set job.module to the path of your "
                                    "module, relative to the job file")
            name = f"fedra_user_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(ref)
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(f"model module {ref}: import failed: {type(exc).__name__}: {exc}") from exc
    missing = [f for f in _REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise UserCodeError(f"model module {ref}: expected functions {', '.join(_REQUIRED)}; "
                            f"missing {', '.join(missing)}")
    return module


def _metrics(where: str, value: object) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserCodeError(f"{where}: expected a dict of metrics (or None), got {type(value).__name__}")
    out: dict[str, Scalar] = {}
    for k, v in value.items():
        if hasattr(v, "item"):  # numpy / torch scalars
            v = v.item()
        if not isinstance(k, str) or not isinstance(v, bool | int | float | str):
            raise UserCodeError(f"{where}: metric {k!r}: expected a number or string, got {type(v).__name__}")
        out[k] = v
    return out


@final
class UserApp:
    """The user's module bound to a framework and to this process's data partitions."""

    def __init__(
        self,
        module_ref: str,
        *,
        partitions: Callable[[str], Dataset],
        framework: str = "auto",
        max_cached: int = 256,
    ) -> None:
        self.module = load_user_module(module_ref)
        self._partition_of = partitions
        self._model: Any = None
        self._framework_name = framework
        self._fw: frameworks.Framework | None = None
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._max_cached = max_cached
        self._load = getattr(self.module, "load", None)
        self._eval_takes_config = len(inspect.signature(self.module.evaluate).parameters) >= 3

    @property
    def framework(self) -> frameworks.Framework:
        self._ensure_model()
        assert self._fw is not None
        return self._fw

    def _ensure_model(self) -> Any:
        if self._model is None:
            if self._framework_name != "auto":
                self._fw = frameworks.get(self._framework_name)
                self._fw.setup_worker()
            try:
                model = self.module.model()
            except Exception as exc:
                raise UserCodeError(f"model(): {type(exc).__name__}: {exc}") from exc
            if self._fw is None:
                self._fw = frameworks.get(frameworks.detect(model))
                self._fw.setup_worker()
            self._model = model
        return self._model

    def init_arrays(self, seed: int) -> dict[str, np.ndarray]:
        """A freshly initialised model's arrays, seeded: the job's initial global model."""
        fw = self.framework  # under "auto" this builds one model first, to learn the framework
        fw.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            self._model = self.module.model()
        except Exception as exc:
            raise UserCodeError(f"model(): {type(exc).__name__}: {exc}") from exc
        return fw.get_arrays(self._model)

    def data(self, key: str, dataset: Dataset | None = None) -> Any:
        """The prepared data of partition ``key``, built on first use and kept (LRU)."""
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        ds = dataset if dataset is not None else self._partition_of(key)
        self._ensure_model()
        try:
            prepared = self._load(ds.x, ds.y) if self._load is not None else self.framework.prepare(ds.x, ds.y)
        except Exception as exc:
            raise UserCodeError(f"load(): {type(exc).__name__}: {exc}") from exc
        self._cache[key] = prepared
        if len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return prepared

    # -- ClientApp ------------------------------------------------------------------------------
    def get_arrays(self) -> dict[str, np.ndarray]:
        return self.framework.get_arrays(self._ensure_model())

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.framework.set_arrays(self._ensure_model(), arrays)

    def train(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> TaskResult:
        data = self.data(client_id)
        self.framework.seed(seed)
        try:
            out = self.module.train(self._model, data, {**config, "seed": seed, "client_id": client_id})
        except Exception as exc:
            raise UserCodeError(f"train(): {type(exc).__name__}: {exc}") from exc
        return TaskResult(num_examples=len(data), metrics=_metrics("train()", out))

    def evaluate(self, client_id: str, config: Mapping[str, Scalar], seed: int) -> TaskResult:
        data = self.data(client_id)
        return TaskResult(num_examples=len(data), metrics=self.evaluate_on(data, config, seed))

    def evaluate_on(self, data: Any, config: Mapping[str, Scalar], seed: int) -> dict[str, Scalar]:
        self._ensure_model()
        self.framework.seed(seed)
        args: Sequence[Any] = (self._model, data, {**config, "seed": seed}) if self._eval_takes_config \
            else (self._model, data)
        try:
            out = self.module.evaluate(*args)
        except Exception as exc:
            raise UserCodeError(f"evaluate(): {type(exc).__name__}: {exc}") from exc
        return _metrics("evaluate()", out)
