"""Multi-process runs: torchrun launch, the rank layout, sequence and CFG parallelism."""
