"""fedra's exception tree.

Every error fedra raises on purpose is a :class:`FedraError`. Library errors are mapped into this tree at
the boundary where they occur (``raise ... from exc``), so callers catch one family and the CLI maps each
branch to a process exit code.

::

    FedraError                       exit 1
    ├── RecordError                  a payload or record is not what was expected      exit 65 (EX_DATAERR)
    │   ├── DecodeError              bytes that are not a valid fedra payload (truncated, bad header)
    │   ├── PayloadTooLarge          payload larger than the configured limit
    │   ├── SchemaMismatch           names, dtypes or shapes differ from the model's
    │   └── NonFiniteValues          NaN or Inf where finite values are required
    ├── ConfigError                  a job spec or argument is invalid                 exit 78 (EX_CONFIG)
    │   └── JobSpecError             one or more fields of a job spec are invalid
    ├── DatasetError                 a dataset is missing or malformed                 exit 66 (EX_NOINPUT)
    ├── UserCodeError                the user's model module failed or is incomplete   exit 70 (EX_SOFTWARE)
    ├── AggregationError             not enough (valid) updates to aggregate           exit 75 (EX_TEMPFAIL)
    ├── SecAggError                  secure aggregation failed (fedra.secagg)          exit 75 (EX_TEMPFAIL)
    │   ├── SecAggAborted            too few survivors: the round has no output
    │   └── ProtocolViolation        a protocol message refused (replayed, reordered, inconsistent)
    ├── TransportError               a transport failed to deliver                     exit 69 (EX_UNAVAILABLE)
    ├── AccessDenied                 a peer is not admitted (certificate, allow-list)  exit 77 (EX_NOPERM)
    └── StateError                   a checkpoint or strategy state cannot be restored exit 74 (EX_IOERR)

Messages follow one shape: what was expected, what was found, and what to do about it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDenied",
    "AggregationError",
    "ConfigError",
    "DatasetError",
    "DecodeError",
    "FedraError",
    "JobSpecError",
    "NonFiniteValues",
    "PayloadTooLarge",
    "RecordError",
    "SchemaMismatch",
    "StateError",
    "TransportError",
    "UserCodeError",
]


class FedraError(Exception):
    """Base of every error fedra raises on purpose."""

    exit_code: ClassVar[int] = 1


class RecordError(FedraError):
    """A payload or record is not what was expected."""

    exit_code = 65


class DecodeError(RecordError):
    """Bytes that are not a valid fedra payload: truncated, a malformed header, bad offsets."""


class PayloadTooLarge(RecordError):
    """A payload is larger than the configured limit."""

    def __init__(self, *, size: int, limit: int, what: str = "payload") -> None:
        super().__init__(
            f"{what} too large: expected at most {limit:,} bytes, got {size:,} bytes; "
            "raise the limit (max_payload_bytes) if this model is meant to be that big"
        )
        self.size = size
        self.limit = limit


class SchemaMismatch(RecordError):
    """Array names, dtypes or shapes differ from the model's."""

    def __init__(self, message: str, *, name: str | None = None, expected: object = None,
                 found: object = None) -> None:
        super().__init__(message)
        self.name = name
        self.expected = expected
        self.found = found


class NonFiniteValues(RecordError):
    """NaN or Inf where finite values are required."""

    def __init__(self, *, name: str, count: int, size: int) -> None:
        super().__init__(
            f"array {name!r}: expected only finite values, found {count:,} NaN/Inf of {size:,}; "
            "the client's training diverged (lower its learning rate) or its update is corrupt"
        )
        self.name = name
        self.count = count


class ConfigError(FedraError):
    """A job spec, option or argument is invalid."""

    exit_code = 78


class JobSpecError(ConfigError):
    """One or more fields of a job spec are invalid; ``problems`` lists ``(field, message)``."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        lines = "\n".join(f"  {field}: {msg}" for field, msg in problems)
        super().__init__(f"invalid job spec {source}:\n{lines}")
        self.source = source
        self.problems = problems


class DatasetError(FedraError):
    """A dataset is missing or malformed."""

    exit_code = 66


class UserCodeError(FedraError):
    """The user's model module failed, or lacks something fedra needs."""

    exit_code = 70


class AggregationError(FedraError):
    """Not enough valid updates to aggregate, or arguments the math cannot accept."""

    exit_code = 75


class TransportError(FedraError):
    """A transport could not deliver tasks or replies."""

    exit_code = 69


class AccessDenied(FedraError):
    """A peer is not admitted: its certificate is untrusted, expired or revoked, or it is not allowed."""

    exit_code = 77


class StateError(FedraError):
    """A checkpoint or strategy state cannot be saved or restored."""

    exit_code = 74
