#!/usr/bin/env bash
# make gpu-check: what a lent GPU machine runs in one call (<= 10 min), issue 19.
#   1. the CUDA tests (tests/embeddings/test_ssm_target.py -k cuda, tests/training/test_gpu_step.py);
#   2. the 448-px train-step figure: benchmarks/train_step.py --device cuda --size 448 --arch resnet50
#      --batch 128 --bf16 --channels-last (MiniLM text tower, top layer trained; cached vs uncached text);
#   3. the controlled worlds' gpu grid (docs/worlds.md): medfilip world --grid gpu --run --jobs $(nproc)
#      for at most GPU_CHECK_WORLDS_S (default 240 s, and never past the budget less 40 s), then
#      --summarise into worlds.csv, worlds_predictions.csv and worlds.png. The grid (thousands of runs)
#      may not finish in one call: runs are written as they finish (one job file per process beside the runs
#      file, merged when every process ends), so a timeout keeps what finished, the summary reads it,
#      and a rerun resumes. The runs stay in $GPU_CHECK_WORLDS_DIR (default results/gpu_check/worlds,
#      kept on a warm machine; carry it to go on on a fresh one) and are copied to the output folder;
#   4. the simulation's seeds from a pre-rendered store: snakemake results/tables/seeds.csv with
#      config/simulation.yaml and training.device cuda, when results/images/corpus/ (and labels,
#      embeddings) came with the working tree; what finishes in the time left is kept (rerun to go on).
# Without CUDA it prints one line and exits 2. Logs and outputs go to $OUT (the device machine's
# return folder) if set, else results/gpu_check/. Environment: PYTHON (default .venv/bin/python),
# GPU_CHECK_BUDGET_S (default 570), GPU_CHECK_WORLDS_S (default 240; under 20 skips the worlds),
# GPU_CHECK_WORLDS_DIR, GPU_CHECK_SIM_JOBS (trainings sharing the GPU at once, default 4).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-check: no CUDA device (torch.cuda.is_available() is False with $PY); nothing was run"
    exit 2
fi

OUTDIR="${OUT:-results/gpu_check}"
mkdir -p "$OUTDIR"
START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET_S:-570}"
left() { echo $((BUDGET - ($(date +%s) - START))); }
status=0
step() {  # step NAME SECONDS CMD...: run with a time limit, log to $OUTDIR/NAME.log, say how it went
    # (PARTIAL_OK=1 step ...: reaching the time limit, rc 124, is no failure: what finished is kept)
    local name=$1 limit=$2
    shift 2
    if [ "$limit" -lt 20 ]; then
        echo "gpu-check: $name skipped (under 20 s of time left for it)" | tee -a "$OUTDIR/summary.txt"
        return
    fi
    local t0=$(date +%s)
    timeout "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
    local rc=$?
    local note=""
    [ $rc -eq 124 ] && note=", time limit reached"
    echo "gpu-check: $name rc=$rc in $(( $(date +%s) - t0 )) s$note (log $OUTDIR/$name.log)" | tee -a "$OUTDIR/summary.txt"
    [ $rc -eq 0 ] || { [ $rc -eq 124 ] && [ -n "${PARTIAL_OK:-}" ]; } || status=1
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1; } > "$OUTDIR/summary.txt"
step cuda_tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/training/test_gpu_step.py tests/embeddings/test_ssm_target.py
step train_step_448 180 "$PY" benchmarks/train_step.py --device cuda --size 448 --arch resnet50 --batch 128 \
    --bf16 --channels-last --workers 8 --threads 8 --images 1024 --steps 12 --warmup 3 --label-pool 64 --no-reference
grep -E "images/s|ratio" "$OUTDIR/train_step_448.log" 2>/dev/null | sed 's/^/  /' | tee -a "$OUTDIR/summary.txt"

# the worlds: the run step gets the time limit (a timeout keeps the finished runs), the summary runs anyway
WDIR="${GPU_CHECK_WORLDS_DIR:-results/gpu_check/worlds}"
WRUNS="$WDIR/worlds_runs.csv"
mkdir -p "$WDIR"
wlimit=$(( $(left) - 40 ))
[ "${GPU_CHECK_WORLDS_S:-240}" -lt "$wlimit" ] && wlimit="${GPU_CHECK_WORLDS_S:-240}"
PARTIAL_OK=1 step worlds "$wlimit" "$PY" -m medfilip world --grid gpu --run --jobs "$(nproc)" --runs "$WRUNS"
if [ "$wlimit" -ge 20 ]; then
    wsum=$(left)
    [ "$wsum" -gt 60 ] && wsum=60
    step worlds_summary "$wsum" "$PY" -m medfilip world --grid gpu --summarise --runs "$WRUNS" \
        --table "$OUTDIR/worlds.csv" --verdicts "$OUTDIR/worlds_predictions.csv" --figure "$OUTDIR/worlds.png"
    cp "$WDIR"/worlds_runs*.csv "$OUTDIR/" 2>/dev/null
    "$PY" - "$WRUNS" <<'PY' 2>&1 | sed 's/^/  worlds: /' | tee -a "$OUTDIR/summary.txt"
import sys
from medfilip.worlds.settings import load_worlds_config
from medfilip.worlds.jobs import read_runs
from medfilip.worlds.sweep import current, grid_runs
cfg = load_worlds_config("config/worlds.yaml").on_gpu()
print(f"{len(current(read_runs(sys.argv[1]), cfg))} of the gpu grid's {len(grid_runs(cfg))} runs done")
PY
fi

if [ -f results/images/corpus/index.parquet ] && [ -f results/labels.parquet ]; then
    step simulation "$(left)" "$PY" -m snakemake --cores "$(nproc)" --resources gpu="${GPU_CHECK_SIM_JOBS:-4}" \
        --keep-going --rerun-incomplete --snakefile workflow/Snakefile --configfile config/simulation.yaml \
        --config 'training={device: cuda}' 'evaluation={device: cuda}' -- results/tables/seeds.csv
    ls results/models 2>/dev/null | wc -l | sed 's/^/  trained runs: /' | tee -a "$OUTDIR/summary.txt"
    cp results/tables/seeds.csv results/tables/zeroshot.csv "$OUTDIR/" 2>/dev/null
else
    echo "gpu-check: simulation skipped: no pre-rendered store (results/images/corpus/index.parquet, results/labels.parquet);" \
        "carry results/ or run the upstream stages first" | tee -a "$OUTDIR/summary.txt"
fi
echo "gpu-check: done in $(( $(date +%s) - START )) s, status $status" | tee -a "$OUTDIR/summary.txt"
exit $status
