"""Observers: what a run shows and leaves behind, fed by the round driver's events.

- :class:`ConsoleObserver`: a progress bar, a line per round and a closing table, on a rich console.
- :class:`JsonlObserver`: one JSON line per round (``metrics.jsonl``), read back by :func:`read_jsonl`.
- :func:`write_plot`: accuracy and loss per round as a PNG.

Importing this package imports neither matplotlib nor any model framework: :func:`write_plot` imports
matplotlib when it is called, so commands that never plot start fast.
"""

from fedra.observe._console import ConsoleObserver
from fedra.observe._files import JsonlObserver, read_jsonl
from fedra.observe._plot import write_plot

__all__ = ["ConsoleObserver", "JsonlObserver", "read_jsonl", "write_plot"]
