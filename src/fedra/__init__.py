"""fedra: Linux-native federated learning.

The public API is re-exported here; everything under a leading-underscore module is private.
"""

from fedra.errors import FedraError

__version__ = "0.1.0"

__all__ = ["FedraError", "__version__"]
