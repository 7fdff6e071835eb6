"""`datasetddpm reproduce PRESET`: the paper's experiment for one preset as one resumable command."""

from .config import PAPER_TABLE2, ReproduceConfig  # noqa: F401
from .run import plan_reproduce, reproduce, reproduce_task  # noqa: F401
