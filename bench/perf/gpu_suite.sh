#!/usr/bin/env bash
# The GPU suite on one GPU: speed, epoch and end-to-end times, packing, profiles, compilation and the NCCL
# data-parallel path, written under $OUT (SECTION.json, profile_*.txt, summary.md). Runs from the source tree
# with only torch and torchvision (no Ray, MLflow, typer or rich).
#
#   OUT=/tmp/gpu bash bench/perf/gpu_suite.sh            # on the GPU machine, ~6 minutes
#   OUT=/tmp/gpu bash bench/perf/gpu_suite.sh --smoke    # tiny sizes on a CPU: checks the script
#
# Each section runs in its own process under its own time limit (and the whole under BUDGET_S seconds),
# so one failure or hang costs only that section; summary.md names what did not finish. Order: the
# cheapest and most important first, torch.compile last (its compile time is the least predictable).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-$(command -v python || command -v python3)}
OUT=${OUT:-results/gpu_suite}
SMOKE=""
[ "${1:-}" = "--smoke" ] && SMOKE="--smoke"
BUDGET_S=${BUDGET_S:-400}
mkdir -p "$OUT"
start=$(date +%s)

section() {  # section NAME CAP_SECONDS
    local name=$1 cap=$2 left limit rc
    left=$((BUDGET_S - ($(date +%s) - start)))
    limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 20 ]; then
        echo "== $name skipped: ${left}s of the budget left"
        echo "{\"skipped\": \"budget of ${BUDGET_S}s used up\"}" > "$OUT/$name.json"
        return
    fi
    echo "== $name (limit ${limit}s, $(( $(date +%s) - start ))s elapsed)"
    timeout -k 10 "$limit" "$PY" -u -m bench.perf.gpu_suite "$name" --out "$OUT" $SMOKE > "$OUT/$name.log" 2>&1
    rc=$?
    tail -n 5 "$OUT/$name.log"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "{\"error\": \"timed out after ${limit}s (see $name.log)\"}" > "$OUT/$name.json"
    fi
    echo "== $name rc=$rc"
}

section env 45
# The NCCL/CUDA data-parallel path starts and trains (one H200: 1 worker; the machine has no Ray, so this
# is the training loop's DDP Stepper under torch.distributed, as each Ray Train worker runs it).
echo "== nccl (limit 60s)"
if [ -z "$SMOKE" ]; then
    timeout -k 10 60 "$PY" -u -m bench.speed --teacher resnet32x4 --student resnet8x4 --methods kd,diffkd \
        --batch-size 64 --steps 20 --workers 1 --device cuda --json > "$OUT/nccl.json" 2> "$OUT/nccl.log"
    echo "== nccl rc=$?"
fi
section speed 90
section epoch 70
section packing 110
section profile 50
section e2e 80
section compile_default 120
section compile_ro 90
"$PY" -m bench.perf.gpu_suite summary --out "$OUT" $SMOKE
echo "== done in $(( $(date +%s) - start ))s; results in $OUT"
