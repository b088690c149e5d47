#!/usr/bin/env bash
# The GPU figure in one call of at most 8 minutes on a one-GPU machine (H100 or H200):
#   1. benchmarks/gpu_throughput.py on Pythia-160m and -1b shapes, context 2048, bf16: the
#      evaluator's tokens/s and its fraction of the GPU's dense bf16 peak;
#   2. a random-init Pythia-1b-shaped GPT-NeoX, saved as `qid train` saves one (gpu_check.py);
#   3. its 16-bit evaluation (`qid evaluate`, as rule evaluate_base runs it);
#   4. one GPTQ 4-bit cell as the per-cell rule runs it: `qid quantize ... --texts --eval-out`
#      (quantize, save, reload, evaluate in one process); its record gives the quantize seconds,
#      its eval JSON the evaluate seconds;
#   5. the report: one line per step and figure; $OUT/gpu_check.json when $OUT is set.
# Every step runs under `timeout`, capped by what is left of a 430 s budget, so the whole stays
# under 8 minutes; a step that fails or times out is reported and the next one still runs.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --tiny     # tiny shapes on CPU: every code path, ~1 minute
#
# QID_GPU_CHECK_TINY=1 is the same as --tiny. QID_GPU_CHECK_CELL=160m builds the model of steps
# 2-4 in Pythia-160m's shape instead (qid's GPTQ quantizes, packs and evaluates on CPU: a 1b cell
# may not fit the budget, see NOTES-i14-gpu.md). PYTHON picks the interpreter (default: .venv's
# if there is one, else python3). QID_WHEELS names a folder of wheels to install GPTQModel from
# (pip install --no-index; the device image has torch and transformers but no GPTQModel).
set -u
cd "$(dirname "$0")/.."
tiny="${QID_GPU_CHECK_TINY:-0}"
[ "${1:-}" = "--tiny" ] && tiny=1
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false
work="$(mktemp -d "${TMPDIR:-/tmp}/qid-gpu-check.XXXXXX")"
budget=430   # seconds for steps 1-4: + a timed-out step's 10 s grace + the report's 30 < 480
start=$SECONDS
threads=$(nproc)

# step NAME LIMIT_S CMD...: run CMD under timeout (LIMIT_S, or what is left of the budget),
# log its output to $work/NAME.log (tail shown), append "NAME<TAB>rc<TAB>seconds" to steps.tsv.
step() {
  local name=$1 limit=$2 left t0 rc ms
  shift 2
  left=$((budget - (SECONDS - start)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    printf '%s\t%s\t%s\n' "$name" 124 0 >>"$work/steps.tsv"
    echo "== $name: skipped, the budget is spent"
    return
  fi
  echo "== $name (limit ${limit} s): $*"
  t0=$(date +%s%N)
  timeout -k 10 "$limit" "$@" >"$work/$name.log" 2>&1
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  printf '%s\t%s\t%d.%03d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >>"$work/steps.tsv"
  tail -n 8 "$work/$name.log"
}

if [ "$tiny" = 1 ]; then
  cell=tiny
  throughput=(--device cpu --sizes tiny --context 32 --seconds 0 --batches 1 --dtype float32)
  eval_args=(--context 64 --batch-tokens 512)
  options='{"group_size": 32, "desc_act": false, "damp_percent": 0.01, "calibration_length": 64}'
else
  cell="${QID_GPU_CHECK_CELL:-1b}"
  throughput=(--sizes 160m 1b --seconds 8)
  eval_args=(--context 2048 --batch-tokens 8192)
  options='{"group_size": 128, "desc_act": false, "damp_percent": 0.01, "calibration_length": 256}'
fi

timeout -k 5 60 "$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
if ! timeout -k 5 60 "$PYTHON" -c "import gptqmodel" >/dev/null 2>&1; then
  if [ -n "${QID_WHEELS:-}" ]; then
    step install_gptqmodel 90 "$PYTHON" -m pip install --no-index --find-links "$QID_WHEELS" gptqmodel
  else
    echo "gptqmodel not importable: step cell will fail (ModuleNotFoundError); see QID_WHEELS"
  fi
fi

step throughput 150 "$PYTHON" benchmarks/gpu_throughput.py "${throughput[@]}" \
  --json "$work/throughput.json"
step prepare 90 "$PYTHON" benchmarks/gpu_check.py prepare "$work" --shape "$cell"
step base 45 "$PYTHON" -m qid.cli evaluate --checkpoint "$work/model" \
  --texts "$work/eval.parquet" --out "$work/eval_base.json" "${eval_args[@]}" --threads "$threads"
step cell 300 "$PYTHON" -m qid.cli quantize --checkpoint "$work/model" --method gptq --bits 4 \
  --out "$work/gptq-4bit" --record "$work/record.json" --calibration "$work/calibration.parquet" \
  --options "$options" --texts "$work/eval.parquet" --eval-out "$work/eval_gptq.json" \
  "${eval_args[@]}" --threads "$threads"

echo "== report (after $((SECONDS - start)) s)"
timeout -k 5 30 "$PYTHON" benchmarks/gpu_check.py report "$work"
rc=$?
if [ -n "${OUT:-}" ]; then
  tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$work" --exclude model --exclude gptq-4bit . || true
fi
[ "${QID_GPU_CHECK_KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
exit $rc
