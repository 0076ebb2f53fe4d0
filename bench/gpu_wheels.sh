#!/usr/bin/env bash
# The wheels a GPU benchmark call carries in .whl/ (run here, from the repository root, before the first call):
# the shared tool's diffusers, Hydra and OmegaConf, plus what the GPU box lacks that the benchmarks import, at the
# versions constraints.txt pins: ftfy and wcwidth (Wan's prompt cleaning), cache-dit (Cache-DiT rows: without it
# bench/quality.py's cache_dit variants fail, as on 2026-12-06), gguf (GGUF DiT weights) and PyAV (bench/upscaler.py's
# MP4 row; 36 MB, which with the rest stays under a call's 64 MiB carry). Kernel wheels built on the GPU machine
# (FA3, SageAttention2: bench/gpu_env.sh) are not made here.
set -euo pipefail
cd "$(dirname "$0")/.."
pins=()
for name in ftfy wcwidth cache-dit gguf av; do
  pin=$(grep -i "^${name}==" constraints.txt || true)
  [ -n "$pin" ] || { echo "constraints.txt pins no $name" >&2; exit 1; }
  pins+=("$pin")
done
bash ../shared/tools/gpu-wheels.sh "${pins[@]}"
du -sh .whl
