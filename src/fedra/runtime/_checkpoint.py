"""Atomic checkpoints: the global model and the strategy state after every completed round.

Layout of a checkpoint directory::

    model-r000012.safetensors   the global model after round 12 (readable by any safetensors tool)
    state-r000012.bin           the strategy state (round, RNG, optimizer moments)
    extra-r000012.json          other components' state, by name (e.g. "privacy": the DP accountant);
                                only when there is some
    checkpoint.json             {"round": 12, "model": ..., "state": ..., "sha256": {...}}

The extra state is a generic map, name -> JSON document (UTF-8 bytes), so any component that keeps
state between rounds (the privacy accountant now, a quarantine reputation later) is saved in the same
atomic checkpoint without a new file format each time. A checkpoint written before it existed has no
``extra`` entry in its manifest and loads with an empty map.

Files are written and fsynced first; ``checkpoint.json`` is then replaced atomically (rename), so a
crash at any moment leaves either the previous checkpoint or the new one, never a mix. Older files are
removed only after the new manifest is durable.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, final

import numpy as np

from fedra.errors import RecordError, StateError
from fedra.records import decode_arrays, encode_arrays
from fedra.strategy import StrategyState

__all__ = ["Checkpoint", "CheckpointStore", "ClientRecord", "StateStore", "check_extra"]

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
    #: other components' state by name, each a JSON document as UTF-8 bytes (empty in older checkpoints)
    extra: Mapping[str, bytes] = field(default_factory=dict)


def check_extra(extra: Mapping[str, bytes] | None) -> dict[str, bytes]:
    """``extra`` as a plain dict, refusing names that are not short strings and values that are not JSON.

    Checked on save, so a component that hands over something unreadable fails at once, not on resume.
    """
    out: dict[str, bytes] = {}
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not 0 < len(name) <= 255:
            raise StateError(f"checkpoint extra state: expected names of 1 to 255 characters, got {name!r}")
        try:
            json.loads(bytes(value).decode("utf-8"))
        except (TypeError, ValueError) as exc:
            raise StateError(f"checkpoint extra state {name!r}: expected a JSON document as UTF-8 bytes, "
                             f"got {type(value).__name__} that does not parse ({exc})") from exc
        out[name] = bytes(value)
    return out


class StateStore(Protocol):
    """Where the driver keeps its checkpoint: :class:`CheckpointStore` (files) or ``SqlStateStore``."""

    @property
    def directory(self) -> object:
        """Where it is, for messages (a path, or a redacted database URL)."""

    def save(self, round: int, params: Mapping[str, np.ndarray], state: StrategyState, *,
             clients: Iterable[ClientRecord] | None = None, extra: Mapping[str, bytes] | None = None
             ) -> None: ...

    def load(self) -> Checkpoint | None: ...


def _write_durable(path: Path, data: bytes | bytearray | memoryview) -> str:
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
             clients: Iterable[ClientRecord] | None = None, extra: Mapping[str, bytes] | None = None
             ) -> None:
        """Write the checkpoint after ``round``; ``extra``: other components' JSON state by name."""
        extras = check_extra(extra)
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        model_name, state_name = f"model-r{round:06d}.safetensors", f"state-r{round:06d}.bin"
        digests = {
            model_name: _write_durable(d / model_name, encode_arrays(params, {"fedra.round": str(round)})),
            state_name: _write_durable(d / state_name, state.to_bytes()),
        }
        manifest: dict[str, object] = {"round": round, "model": model_name, "state": state_name,
                                       "sha256": digests, "clients": [asdict(c) for c in clients or ()]}
        keep = {model_name, state_name, _MANIFEST}
        if extras:
            # one JSON object of JSON texts: each component gets back exactly the bytes it saved
            extra_name = f"extra-r{round:06d}.json"
            blob = json.dumps({k: v.decode("utf-8") for k, v in extras.items()}, indent=1).encode()
            digests[extra_name] = _write_durable(d / extra_name, blob)
            manifest["extra"] = extra_name
            keep.add(extra_name)
        _write_durable(d / _MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(d)
        for old in d.glob("*-r*.*"):
            if old.name not in keep and old.suffix in (".safetensors", ".bin", ".json", ".tmp"):
                old.unlink(missing_ok=True)

    def load(self) -> Checkpoint | None:
        """The latest checkpoint, or ``None`` when the directory holds none."""
        manifest_path = self.directory / _MANIFEST
        if not manifest_path.exists():
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            blobs = {}
            for key in ("model", "state", "extra"):
                if key == "extra" and key not in manifest:
                    continue  # written before the extra state existed, or with none
                name = manifest[key]
                data = (self.directory / name).read_bytes()
                if hashlib.sha256(data).hexdigest() != manifest["sha256"][name]:
                    raise StateError(f"checkpoint file {name}: sha256 does not match the manifest; "
                                     "the file is corrupt: restore it or remove the checkpoint directory")
                blobs[key] = data
            arrays, _ = decode_arrays(blobs["model"])
            state = StrategyState.from_bytes(blobs["state"])
            extra = ({k: v.encode("utf-8") for k, v in json.loads(blobs["extra"]).items()}
                     if "extra" in blobs else {})
        except StateError:
            raise
        except (OSError, KeyError, TypeError, ValueError, AttributeError, RecordError) as exc:
            raise StateError(f"cannot load checkpoint from {self.directory}: {exc}") from exc
        return Checkpoint(round=int(manifest["round"]), params={k: np.array(v) for k, v in arrays.items()},
                          state=state, clients=tuple(ClientRecord(**c) for c in manifest.get("clients", [])),
                          extra=extra)
