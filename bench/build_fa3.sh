#!/usr/bin/env bash
# Build a FlashAttention-3 wheel (Hopper, bf16, head dim 128, forward only: what sgld's DiTs run) from source:
#   bash bench/build_fa3.sh SOURCE_DIR OUT_DIR
#   FA3_FP8=1 bash bench/build_fa3.sh SOURCE_DIR OUT_DIR    # with the FP8 (e4m3) forward: --attention-backend fa3_fp8
# SOURCE_DIR holds flash-attention's hopper/ and csrc/cutlass/include (the cutlass commit its submodule
# names). Install with `pip install --no-deps OUT_DIR/flash_attn_3-*.whl`, choose with --attention-backend fa3.
set -euo pipefail
src=${1:?source dir}; out=${2:?output dir}
disabled="BACKWARD SPLIT PAGEDKV APPENDKV LOCAL SOFTCAP PACKGQA FP16 VARLEN CLUSTER HDIM64 HDIM96 HDIM192 HDIM256 SM80 HDIMDIFF64 HDIMDIFF192"
[ "${FA3_FP8:-0}" = 1 ] || disabled="$disabled FP8"
for feature in $disabled; do
  export FLASH_ATTENTION_DISABLE_$feature=TRUE
done
# FORCE_BUILD: compile here instead of looking for a prebuilt wheel online.
export FLASH_ATTENTION_FORCE_BUILD=TRUE NVCC_THREADS=${NVCC_THREADS:-8} MAX_JOBS=${MAX_JOBS:-4}
cd "$src/hopper"
python3 -m pip wheel . --no-build-isolation --no-deps -w "$out"
