"""`datasetddpm download`: the paper's checkpoints and datasets from a registry of their published URLs,
fetched resumably and atomically, then checked as the commands that use them check them."""

from .registry import REGISTRY, Entry, get_entry  # noqa: F401
