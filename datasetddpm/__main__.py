"""`python -m datasetddpm ...` (used by `torchrun -m datasetddpm ...`) runs the command line."""

from .cli.main import main

main()
