#!/usr/bin/env bash
# Multi-GPU scaling of Wan2.1-14B 1280x720x81 (random full-size weights) with Ulysses-N, through the CLI.
#   bench/scaling.sh OUT_DIR      (GPUS="4 2 1" STEPS=3 PER_RUN_S=240 by default)
# Each run's log holds the load time and the stage times ("denoise 12.34s"); s/step = denoise / STEPS,
# the first step's warm-up included, the same for every N.
set -u
out=${1:-scaling}; steps=${STEPS:-3}; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
for n in ${GPUS:-4 2 1}; do
  degree=(); [ "$n" -gt 1 ] && degree=(--ulysses-degree "$n")
  start=$(date +%s)
  timeout "${PER_RUN_S:-240}" python3 -m sgld.cli generate --model-path random:Wan-AI/Wan2.1-T2V-14B-Diffusers \
    --num-gpus "$n" "${degree[@]}" --height 720 --width 1280 --num-frames 81 --num-inference-steps "$steps" --seed 0 \
    --no-save-output --prompt "A red fox runs through fresh snow at dawn" > "$out/wan14b_ulysses$n.log" 2>&1
  rc=$?
  echo "gpus=$n rc=$rc wall_s=$(( $(date +%s) - start ))"
  grep -E "load [0-9.]+s;|done in|Error|error:" "$out/wan14b_ulysses$n.log" | tail -3
done
