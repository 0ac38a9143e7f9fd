#!/usr/bin/env bash
# GPU smoke check for a CUDA machine (see docs/distributed.md). On a generated dataset it runs
#   1. a 1-epoch two-stage-lite (head + fine-tune stage) with --device cuda --amp bf16,
#   2. `marinelife predict` on the test split (CPU inference), and
#   3. `marinelife export --format onnx` (verified against PyTorch),
# printing images/s for each; with 2+ GPUs it also runs the same training under torchrun.
#
#   bash bench/gpu_check.sh            # PYTHON=... to use another interpreter, SIZE=... px
#
# Everything lives in a temporary folder (feature cache included) that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
SIZE=${SIZE:-224}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/marinelife-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export MARINELIFE_CACHE="$WORK/cache" PYTHONUNBUFFERED=1

"$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU visible to PyTorch (torch %s)" % torch.__version__)
for i in range(torch.cuda.device_count()):
    print(f"GPU {i}: {torch.cuda.get_device_name(i)}, bf16={torch.cuda.is_bf16_supported()}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count())')

"$PY" - "$WORK/data" "$SIZE" <<'EOF'
import sys
from marinelife.data.synthetic import make_synthetic_dataset
counts = {"train": 64, "val": 16, "test": 16}  # per class: 256 / 64 / 64 images
make_synthetic_dataset(sys.argv[1], num_classes=4, counts=counts, size=int(sys.argv[2]))
EOF
N_TEST=$(find "$WORK/data/test" -type f | wc -l)

# images/s of each epoch, from the run's metrics.csv
train_speed() {
  "$PY" - "$1/metrics.csv" "$2" <<'EOF'
import csv, sys
for row in csv.DictReader(open(sys.argv[1], newline="")):
    print(f"{sys.argv[2]} train {row['stage']:8s}: {float(row['train_samples_per_s']):8.1f} images/s"
          f"  (val acc {row['val_acc']})")
EOF
}

# seconds → images/s for N images
rate() { "$PY" -c "import sys; n, s = int(sys.argv[1]), float(sys.argv[2]); print(f'{n / s:.1f}')" "$@"; }
now() { date +%s.%N; }
since() { "$PY" -c "import sys, time; print(time.time() - float(sys.argv[1]))" "$1"; }

TRAIN=(--data "$WORK/data" --recipe two-stage-lite --runs-dir "$WORK/runs" --device cuda
       --amp bf16 --set epochs=1 --set finetune_epochs=1 --set report=false -q)

echo "== 1. train: two-stage-lite, 1 epoch per stage, --device cuda --amp bf16"
t0=$(now)
"$PY" -m marinelife train --name gpu "${TRAIN[@]}"
echo "wall time $(since "$t0") s (model load, feature cache, both stages, test evaluation)"
train_speed "$WORK/runs/gpu" "1 GPU"

# `marinelife predict` runs on the CPU (it has no device option), so these are CPU numbers.
echo "== 2. predict: $N_TEST test images (torch backend, CPU)"
t0=$(now)
"$PY" -m marinelife predict "$WORK/runs/gpu" "$WORK/data/test" --format csv --backend torch \
  --batch-size 32 -q >"$WORK/predictions.csv"
echo "predict: $(rate "$N_TEST" "$(since "$t0")") images/s (process start and model load included)"

echo "== 3. export: ONNX, checked against PyTorch on the test split"
"$PY" -m marinelife export "$WORK/runs/gpu" --format onnx --data "$WORK/data" --out "$WORK/export"
t0=$(now)
"$PY" -m marinelife predict "$WORK/export" "$WORK/data/test" --format csv --backend onnx \
  --batch-size 32 -q >"$WORK/predictions-onnx.csv"
echo "predict (onnx): $(rate "$N_TEST" "$(since "$t0")") images/s (process start included)"

if [ "$NGPU" -ge 2 ]; then
  echo "== 4. train under torchrun on $NGPU GPUs (NCCL), same per-process batch"
  "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" \
    -m marinelife train --name ddp "${TRAIN[@]}"
  train_speed "$WORK/runs/ddp" "$NGPU GPUs"
fi
echo "gpu_check: OK"
