"""Errors of the secure aggregation protocol.

::

    FedraError                       (fedra.errors)
    └── SecAggError                  secure aggregation failed or was misused      exit 75 (EX_TEMPFAIL)
        ├── SecAggAborted            too few clients survived a stage: the round ends with no output
        └── ProtocolViolation        a message or instruction that the protocol forbids: replayed,
                                     reordered, from another round, inconsistent, or malformed

A :class:`ProtocolViolation` raised by :meth:`~fedra.secagg.ServerProtocol.receive` rejects that one
message and leaves the server's state unchanged (the driver logs it and carries on); raised by a client's
``receive`` it is the client refusing to continue, which the server sees as that client dropping out.
"""

from __future__ import annotations

from fedra.errors import FedraError

__all__ = ["ProtocolViolation", "SecAggAborted", "SecAggError"]


class SecAggError(FedraError):
    """Secure aggregation failed or was called with arguments it cannot accept."""

    exit_code = 75


class SecAggAborted(SecAggError):
    """Too few clients survived a stage of the protocol; the round produces no output."""


class ProtocolViolation(SecAggError):
    """A message that the protocol forbids: replayed, out of order, from another round, or inconsistent."""
