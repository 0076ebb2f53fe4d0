#!/usr/bin/env bash
# Pack the kernel sources bench/gpu_env.sh builds on the GPU machine into build/ (carried with the call):
#   bash bench/pack_kernel_sources.sh FLASH_ATTENTION_GIT CUTLASS_GIT SAGEATTENTION_GIT
# Each argument is a git directory (a clone, or a bare mirror) of github.com/Dao-AILab/flash-attention,
# github.com/NVIDIA/cutlass and github.com/thu-ml/SageAttention. build/fa3src.tgz: flash-attention's hopper/ and
# README.md at its HEAD, with cutlass's include/ at the commit flash-attention's csrc/cutlass submodule names;
# build/sagesrc.tgz: SageAttention's csrc/, sageattention/, setup.py and README.md at its HEAD.
set -euo pipefail
fa=${1:?flash-attention git dir}; cutlass=${2:?cutlass git dir}; sage=${3:?SageAttention git dir}
out=$(cd "$(dirname "$0")/.." && pwd)/build
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/fa3src/csrc/cutlass" "$work/sagesrc"
git -C "$fa" archive HEAD hopper README.md | tar x -C "$work/fa3src"
submodule=$(git -C "$fa" ls-tree HEAD csrc/cutlass | awk '{print $3}')
git -C "$cutlass" archive "$submodule" include | tar x -C "$work/fa3src/csrc/cutlass"
git -C "$sage" archive HEAD csrc sageattention setup.py README.md | tar x -C "$work/sagesrc"
tar czf "$out/fa3src.tgz" -C "$work" fa3src
tar czf "$out/sagesrc.tgz" -C "$work" sagesrc
echo "flash-attention $(git -C "$fa" rev-parse --short HEAD), cutlass ${submodule:0:9}, SageAttention $(git -C "$sage" rev-parse --short HEAD)"
ls -la "$out"
