#!/usr/bin/env bash
# The one prepared command of the gpu profile, run on a lent GPU machine (offline: torch, no MLflow, no DVC):
#
#   bash benchmarks/gpu_command.sh PART smoke     every recipe of the part, 2 epochs on a subset (about 2 minutes)
#   bash benchmarks/gpu_command.sh PART           the part's measured run (at most 9 minutes), throughput first
#   bash benchmarks/gpu_command.sh speed [smoke]  the speed records: gpu94 and gpu95, 5 seeds each (SPEED_RECIPES)
#   bash benchmarks/gpu_command.sh accuracy       the accuracy attempt (acc96, one seed: GPU_SET=train.seed=43 ...)
#
# It reads what `make gpu-carry` put in .gpu/ (the four official .gz files, the wheels the machine lacks) and
# writes at most 8 files to $OUT: records-PART.tar.gz, summary-PART.md, w-RUN.tar (the weights that fit),
# log-PART.txt, and throughput.md/.json with the measured run of the part named by THROUGHPUT_PART.
# At home: `make gpu-import DIR=<the folder they came back to>` (docs/gpu.md).
#
# CI runs it on the CPU with a tiny budget (GPU_RECIPES, GPU_DEVICE=cpu), so it cannot rot.
set -euo pipefail
part=${1:?usage: gpu_command.sh PART [smoke]}
mode=${2:-measured}
out=${OUT:?set OUT to the folder whose files come back}
carry=${GPU_CARRY:-.gpu}
limit=${GPU_LIMIT_SECONDS:-540}    # 9 minutes, the data's preparation and the throughput table included
mkdir -p "$out"
log="$out/log-$part.txt"
exec > >(tee -a "$log") 2>&1
started=$(date +%s)

if compgen -G "$carry/wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fmnist-site \
    "$carry"/wheels/*.whl
  export PYTHONPATH=/tmp/fmnist-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
python3 -c "import pydantic, torch, torchvision, sklearn; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available', torch.cuda.is_available(), 'pydantic', pydantic.VERSION)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
raw=${GPU_RAW_DIR:-$carry/data}
recipes=${GPU_RECIPES:+--recipes $GPU_RECIPES}
overrides=(${GPU_SET:+--set $GPU_SET} --tflops "${GPU_TFLOPS:-$([ "$part" = accuracy ] && echo 100 || echo 40)}")

if [ "$part" = speed ]; then
  python3 benchmarks/gpu_run.py "${overrides[@]}" speed "${SPEED_RECIPES:-gpu94,gpu95}" --raw-dir "$raw" \
    --out "$out" --seeds "${SPEED_SEEDS:-5}" $([ "$mode" = smoke ] && echo --smoke)
elif [ "$mode" = smoke ]; then
  python3 benchmarks/gpu_run.py "${overrides[@]}" run "$part" --smoke --no-probes --limit-seconds "$limit" --raw-dir "$raw" \
    --out "$out" --weights-files 2 $recipes
else
  if [ "$part" = "${THROUGHPUT_PART:-small}" ]; then
    python3 benchmarks/bench_throughput.py --device "${GPU_DEVICE:-cuda}" --profile gpu --raw-dir "$raw" --out "$out" \
      ${GPU_THROUGHPUT_NETWORKS:+--networks $GPU_THROUGHPUT_NETWORKS} ${GPU_THROUGHPUT_STEPS:+--steps $GPU_THROUGHPUT_STEPS} \
      || echo "throughput: failed (the training goes on)"
  fi
  left=$(( limit - ($(date +%s) - started) ))
  python3 benchmarks/gpu_run.py "${overrides[@]}" run "$part" --limit-seconds "$left" --raw-dir "$raw" --out "$out" \
    --weights-files 3 $recipes
fi
echo "gpu_command: $part $mode done in $(( $(date +%s) - started )) s; files in $out: $(ls "$out" | tr '\n' ' ')"
