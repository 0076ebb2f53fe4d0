#!/usr/bin/env bash
# Build a SageAttention2 wheel from its source for Hopper (sm90) on a machine with nvcc and torch:
#   bash bench/build_sage.sh SOURCE_DIR OUT_DIR        # ~4 min on 16 cores; the wheel lands in OUT_DIR
# SOURCE_DIR is a checkout of github.com/thu-ml/SageAttention. Install the wheel with
#   pip install --no-deps OUT_DIR/sageattention-*.whl
# and choose it with --attention-backend sage. Other GPUs: set TORCH_CUDA_ARCH_LIST (8.0, 8.9, 9.0, 12.0).
set -euo pipefail
src=${1:?source dir}; out=${2:?output dir}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} EXT_PARALLEL=${EXT_PARALLEL:-4} MAX_JOBS=${MAX_JOBS:-16}
cd "$src"
python3 -m pip wheel . --no-build-isolation --no-deps -w "$out"
