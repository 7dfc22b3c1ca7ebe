"""Atomic checkpoints: the global model and the strategy state after every completed round.

Layout of a checkpoint directory::

    model-r000012.safetensors   the global model after round 12 (readable by any safetensors tool)
    state-r000012.bin           the strategy state (round, RNG, optimizer moments)
    checkpoint.json             {"round": 12, "model": ..., "state": ..., "sha256": {...}}

Files are written and fsynced first; ``checkpoint.json`` is then replaced atomically (rename), so a
crash at any moment leaves either the previous checkpoint or the new one, never a mix. Older files are
removed only after the new manifest is durable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, final

import numpy as np

from fedra.errors import RecordError, StateError
from fedra.records import decode_arrays, encode_arrays
from fedra.strategy import StrategyState

__all__ = ["Checkpoint", "CheckpointStore", "ClientRecord", "StateStore"]

_MANIFEST = "checkpoint.json"


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """One client of a job: the rounds it was first and last seen in, how many it took part in, and
    whether it is quarantined (excluded from sampling)."""

    name: str
    first_seen: int
    last_seen: int
    rounds_participated: int = 0
    quarantined: bool = False


@dataclass(frozen=True, slots=True)
class Checkpoint:
    round: int
    params: dict[str, np.ndarray]
    state: StrategyState
    clients: tuple[ClientRecord, ...] = ()


class StateStore(Protocol):
    """Where the driver keeps its checkpoint: :class:`CheckpointStore` (files) or ``SqlStateStore``."""

    @property
    def directory(self) -> object:
        """Where it is, for messages (a path, or a redacted database URL)."""

    def save(self, round: int, params: Mapping[str, np.ndarray], state: StrategyState, *,
             clients: Iterable[ClientRecord] | None = None) -> None: ...

    def load(self) -> Checkpoint | None: ...


def _write_durable(path: Path, data: bytes | bytearray) -> str:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@final
class CheckpointStore:
    """Saves and loads the latest checkpoint in one directory."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def save(self, round: int, params: Mapping[str, np.ndarray], state: StrategyState, *,
             clients: Iterable[ClientRecord] | None = None) -> None:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        model_name, state_name = f"model-r{round:06d}.safetensors", f"state-r{round:06d}.bin"
        digests = {
            model_name: _write_durable(d / model_name, encode_arrays(params, {"fedra.round": str(round)})),
            state_name: _write_durable(d / state_name, state.to_bytes()),
        }
        manifest = {"round": round, "model": model_name, "state": state_name, "sha256": digests,
                    "clients": [asdict(c) for c in clients or ()]}
        _write_durable(d / _MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(d)
        keep = {model_name, state_name, _MANIFEST}
        for old in d.glob("*-r*.*"):
            if old.name not in keep and old.suffix in (".safetensors", ".bin", ".tmp"):
                old.unlink(missing_ok=True)

    def load(self) -> Checkpoint | None:
        """The latest checkpoint, or ``None`` when the directory holds none."""
        manifest_path = self.directory / _MANIFEST
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            blobs = {}
            for key in ("model", "state"):
                name = manifest[key]
                data = (self.directory / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != manifest["sha256"][name]:
                    raise StateError(f"checkpoint file {name}: sha256 does not match the manifest; "
                                     "the file is corrupt: restore it or remove the checkpoint directory")
                blobs[key] = data
            arrays, _ = decode_arrays(blobs["model"])
            state = StrategyState.from_bytes(blobs["state"])
        except StateError:
            raise
        except (OSError, KeyError, TypeError, ValueError, RecordError) as exc:
            raise StateError(f"cannot load checkpoint from {self.directory}: {exc}") from exc
        return Checkpoint(round=int(manifest["round"]), params={k: np.array(v) for k, v in arrays.items()},
                          state=state, clients=tuple(ClientRecord(**c) for c in manifest.get("clients", [])))
