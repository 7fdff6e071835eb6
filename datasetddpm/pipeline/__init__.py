"""DatasetDDPM generation: sample -> label -> global filter -> index, sharded and resumable."""
