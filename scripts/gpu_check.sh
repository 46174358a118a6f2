#!/usr/bin/env bash
# The GPU check in one go, on a fresh NVIDIA machine, in under 8 minutes:
#   1. install from this repo (WHEELS=DIR: offline, from a prebuilt wheel folder)
#   2. the tests marked gpu
#   3. the default experiment with device=cuda precision=bf16
#   4. a 4-job learning-rate sweep on the same GPU (the stages before training are cache hits)
#   5. OUT/report.md and report.json: train pairs/s, encode texts/s, wall time per stage,
#      peak GPU memory and the metrics of every run
#
#   bash scripts/gpu_check.sh [OUT]                    # OUT default: outputs/gpu_check
#   WHEELS=/path/to/wheels bash scripts/gpu_check.sh   # no package index on the machine
#   WHEELS=DIR SYSTEM_TORCH=1 bash scripts/gpu_check.sh # ... and keep the machine's own CUDA torch: a venv
#       over its site-packages, the wheels in DIR installed as they are (no resolving: a CUDA torch is
#       too big to carry, and the repo's torch pin is the CPU build's); the report names the torch used
#   SMOKE=1 bash scripts/gpu_check.sh /tmp/check       # the same steps on a CPU with debug=fast (tests the script)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(mkdir -p "${1:-outputs/gpu_check}" && cd "${1:-outputs/gpu_check}" && pwd)
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
T0=$(date +%s)
say() { echo "[gpu_check +$(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/gpu_check.log"; }
step() {  # step NAME COMMAND...: run it, keep its output and its wall time
  local name=$1; shift
  local t=$(date +%s)
  say "$name: $*"
  "$@" >>"$OUT/$name.log" 2>&1 || { say "$name FAILED (exit $?): see $OUT/$name.log"; tail -30 "$OUT/$name.log"; exit 1; }
  echo $(( $(date +%s) - t )) >"$OUT/wall_$name.txt"
}

if [ "${SMOKE:-0}" = 1 ]; then
  RUN=(debug=fast device=cpu precision=fp32)
else
  RUN=(device=cuda precision=bf16)
fi

install() {
  if [ "${SYSTEM_TORCH:-0}" = 1 ]; then
    [ -x "$PY" ] || python3 -m venv --system-site-packages "$VENV"
    # python3 may itself be a venv (its torch outside the base interpreter's site-packages): a .pth
    # puts the folder holding its torch after this venv's own packages
    python3 -c "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))" \
      >"$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/machine_torch.pth"
    "$PY" -m pip install -q --no-index --no-deps --no-compile "$WHEELS"/*.whl
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .
    "$PY" -c "import runner.pipeline, sentence_transformers, transformers, torch; print('installed: torch', torch.__version__, \
'transformers', transformers.__version__, 'sentence-transformers', sentence_transformers.__version__)"
    return
  fi
  [ -x "$PY" ] || python3 -m venv "$VENV"
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e '.[test]'
  else
    "$PY" -m pip install -q -e '.[test]'
  fi
}
[ "${SKIP_INSTALL:-0}" = 1 ] || step install install

if [ "${SMOKE:-0}" != 1 ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
fi
step gpu_tests "$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider
step default "$PY" -m runner "${RUN[@]}" logger=none name=gpu_check hydra.run.dir="$OUT/default" paths.root="$OUT/outputs"
step sweep "$PY" -m runner -m "${RUN[@]}" logger=none name=gpu_check_lr 'finetune.learning_rate=2e-5,5e-5,1e-4,2e-4' \
  hydra.sweep.dir="$OUT/sweep" hydra.sweep.subdir='${hydra.job.num}' paths.root="$OUT/outputs"
"$PY" scripts/gpu_report.py "$OUT" | tee -a "$OUT/gpu_check.log"
say "done in $(( $(date +%s) - T0 ))s; report: $OUT/report.md"
