"""Speed levers applied to an unmodified DiT: attention kernels, FP8, compile, CUDA graphs, step cache, sliding tiles."""
