# The GPU benchmark environment, sourced on the GPU machine from the repository root:
#   source bench/gpu_env.sh
# Wheels from .whl/ (../shared/tools/gpu-wheels.sh, carried) go into .site; FlashAttention-3 is built once per
# machine into /tmp/fa3whl from build/fa3src.tgz (flash-attention's hopper/ and README.md, plus the cutlass
# include/ its submodule names, as csrc/cutlass/include; carried) unless a flash_attn_3 wheel is in .whl/.
#   FA3_FP8=1: build FA3 with its FP8 forward (into /tmp/fa3whl_fp8; .whl/'s wheel has none)
#   SAGE=1:    build SageAttention2 once from build/sagesrc.tgz (github.com/thu-ml/SageAttention's csrc/,
#              sageattention/, setup.py) into /tmp/sagewhl and install it
set -u
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target .site $(ls .whl/* | grep -v flash_attn_3) >/dev/null 2>&1
export PYTHONPATH=$PWD/.site:$PWD HF_HUB_OFFLINE=1 SGLD_HOME=/tmp/sgld
fa3whl=/tmp/fa3whl
if [ "${FA3_FP8:-0}" = 1 ]; then fa3whl=/tmp/fa3whl_fp8; else mkdir -p $fa3whl; cp .whl/flash_attn_3-*.whl $fa3whl/ 2>/dev/null; fi
if ! ls $fa3whl/flash_attn_3-*.whl >/dev/null 2>&1; then
  start=$(date +%s)
  rm -rf /tmp/fa3 && mkdir -p /tmp/fa3 $fa3whl && tar xzf build/fa3src.tgz -C /tmp/fa3
  MAX_JOBS=${FA3_JOBS:-32} NVCC_THREADS=4 bash bench/build_fa3.sh /tmp/fa3/fa3src $fa3whl > $OUT/fa3_build.log 2>&1
  echo "FA3 build (FP8 ${FA3_FP8:-0}): rc $? in $(( $(date +%s) - start )) s"
fi
# --upgrade: pip --target leaves an installed package in place, so a source with FA3_FP8 set and then without
# (or the reverse) on one machine would keep the first build (H200, 2026-12-06).
python3 -m pip install -q --upgrade --no-index --no-deps --no-cache-dir --target .site $fa3whl/flash_attn_3-*.whl >/dev/null 2>&1
python3 -c "import flash_attn_interface, importlib.metadata as m; print('FA3', m.version('flash_attn_3'))"
if [ "${SAGE:-0}" = 1 ]; then
  if ! ls /tmp/sagewhl/sageattention-*.whl >/dev/null 2>&1; then
    start=$(date +%s)
    rm -rf /tmp/sage && mkdir -p /tmp/sage /tmp/sagewhl && tar xzf build/sagesrc.tgz -C /tmp/sage
    bash bench/build_sage.sh /tmp/sage/sagesrc /tmp/sagewhl > $OUT/sage_build.log 2>&1
    echo "SageAttention2 build: rc $? in $(( $(date +%s) - start )) s"
  fi
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --target .site /tmp/sagewhl/sageattention-*.whl >/dev/null 2>&1
  python3 -c "import sageattention, importlib.metadata as m; print('sageattention', m.version('sageattention'))"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
