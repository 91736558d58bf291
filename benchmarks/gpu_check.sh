#!/usr/bin/env bash
# The GPU checks, in one go on a machine with one CUDA GPU (what the README's GPU figures come from):
#   1. P1 throughput (benchmarks.throughput): --quick with the images resident on the GPU (the
#      default), copied from the host per batch (--host-data), in NCHW and in bf16, then the full
#      size (224 px); and whether torch.compile pays (benchmarks.compile);
#   2. a 4-trial search in which two trials share the GPU (--gpus-per-trial 0.5);
#   3. the test suite, which then runs its training tests on CUDA.
# Usage: OUT=out/gpu TL_DATA_DIR=../shared/data bash benchmarks/gpu_check.sh [p1] [search] [suite]
#   (no argument: all three; the search's results go to $RESULTS, default $OUT/results)
# Each step is bounded (STEP_TIMEOUT_S, default 600) and logged under $OUT; the last lines say which failed.
set -uo pipefail
OUT=${OUT:-out/gpu}
DATA=${TL_DATA_DIR:-../shared/data}
PY=${PYTHON:-python3}
RESULTS=${RESULTS:-$OUT/results}
STEPS=${*:-p1 search suite}
T=${STEP_TIMEOUT_S:-600}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TL_DATA_DIR="$DATA"
status=()
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, remember the exit status
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  timeout "$T" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  status+=("$name rc=$rc $((SECONDS - t0))s")
}
nvidia-smi -L
$PY -c "import torch, torchvision, ray, optuna, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'ray', ray.__version__, 'optuna', optuna.__version__, 'timm', timm.__version__, '|', torch.cuda.get_device_name())"
if [[ " $STEPS " == *" p1 "* ]]; then
  step p1_quick $PY -m benchmarks.throughput --quick --json "$OUT/p1_quick.json"
  step p1_quick_host $PY -m benchmarks.throughput --quick --host-data --json "$OUT/p1_quick_host.json"
  step p1_quick_nchw $PY -m benchmarks.throughput --quick --no-channels-last --json "$OUT/p1_quick_nchw.json"
  step p1_quick_bf16 $PY -m benchmarks.throughput --quick --precision bf16 --json "$OUT/p1_quick_bf16.json"
  step p1_full $PY -m benchmarks.throughput --json "$OUT/p1_full.json"
  step compile $PY -m benchmarks.compile --size 96 --batch 32 --json "$OUT/compile.json"
fi
if [[ " $STEPS " == *" search "* ]]; then
  step search $PY -m tl.search search_spaces/xray.py --data-dir "$DATA" --offline --num-samples 4 --max-epochs 3 \
    --gpus-per-trial 0.5 --storage "$RESULTS" --name gpu-4-trials
fi
if [[ " $STEPS " == *" suite "* ]]; then
  step suite $PY -m pytest -q -p no:cacheprovider --durations=10 ${PYTEST_ARGS:-}
fi
printf '%s\n' "${status[@]}"
