#!/usr/bin/env bash
# The GPU path end to end, in under 10 minutes on one GPU (issue #28), printing what it
# measured: θ0 pre-training and immunization on the GPU in 16-bit mixed precision for
#   1. mnist-cnn with the whole-network defence (full-depth) and with condnum (the penalty
#      loop), on the defence split (300 training + 100 held-out + 100 reserved per digit);
#   2. the ImageNet MobileNetV2 with the whole backbone trained (full-depth), 64 × 64,
#      2,000 images, one epoch (src/condimmune/configs/mobilenet-full-depth-gpu.yaml, shrunk);
# then the deep attack suite on the mnist-cnn full-depth run. The attack suite itself
# runs on the CPU: its trials have no device option yet (docs/attacks.md).
#
# usage: benchmarks/gpu_check.sh [OUT_DIR]      (default runs/gpu-check; must not exist)
set -euo pipefail
out=${1:-runs/gpu-check}
if [[ -e $out ]]; then echo "gpu_check: $out exists; pass another OUT_DIR" >&2; exit 2; fi
python - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device (torch.cuda.is_available() is False)")
print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
PY
mkdir -p "$out"
gpu=(--set train.accelerator=gpu --set train.precision=16-mixed)
split=(--set data.defence_per_class=100 --set data.train_per_class=300)
timed() {  # name, then the command: prints the wall time and keeps the log
  local name=$1 start; shift
  start=$(date +%s%N)
  "$@" > "$out/$name.log" 2>&1 || { echo "$name: FAILED (log: $out/$name.log)"; tail -5 "$out/$name.log"; exit 1; }
  printf '%-28s %6d s\n' "$name" $(( ($(date +%s%N) - start) / 1000000000 ))
}
for method in full-depth condnum; do
  timed "mnist-cnn-$method" condimmune run mnist-cnn --set train.method="$method" \
    "${gpu[@]}" "${split[@]}" --out "$out/mnist-cnn-$method" --no-progress
done
timed mobilenet-full-depth condimmune run \
  --config src/condimmune/configs/mobilenet-full-depth-gpu.yaml --set model.image_size=64 \
  --set data.max_train_images=2000 --set data.defence_per_class=100 --set train.epochs=1 \
  --set data.num_workers=4 --out "$out/mobilenet-full-depth" --no-progress
timed attack-mnist-cnn-full-depth condimmune attack "$out/mnist-cnn-full-depth" --no-progress
python - "$out" <<'PY'
import json, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).glob("*/metrics.json")):
    m = json.loads(run.read_text())
    acc = m["benign_accuracy"]
    line = (f"{run.parent.name}: benign {acc['original']:.3f} -> {acc['immunized']:.3f}, "
            f"train {m['train_seconds']:.1f} s, steps {m['training']['steps']}, "
            f"rollbacks {m['training'].get('guard_rollbacks', '-')}")
    suite = m.get("attack_suite")
    if suite:
        worst = suite["worst_case"]
        line += f"; worst-case slowdown {worst['slowdown']:.3g} ({worst['attacker']})"
    print(line)
PY
