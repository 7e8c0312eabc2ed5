#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, in one run on a machine with an NVIDIA GPU (about 10 minutes on
# an H100/H200): GradCAM speed in fp32 and bf16, the real workflow on 500 images, and the simulation of the same
# run at the measured per-image rate beside it (how well `--simulate-gpu` predicts a GPU run). Nothing is
# downloaded: the model is BLIP-ITM-large's architecture with random weights, written once.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # the outputs, one text file per step, land in OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
work=$(mktemp -d)
python benchmarks/gradcam_speed.py --images 32 --batch-size 16 --device cuda 2>&1 | tee "$out/gradcam_fp32.txt"
python benchmarks/gradcam_speed.py --images 32 --batch-size 16 --device cuda --autocast bf16 2>&1 | tee "$out/gradcam_bf16.txt"
python benchmarks/pipeline_speed.py --device cuda --images 500 --size 500x375 --batch-size 16 --workdir "$work/real" 2>&1 \
  | tee "$out/pipeline_cuda_500.txt"
# the measured model seconds per image of the real run (its "ideal:" line states N*S)
rate=$(python -c "import re,sys; t=open(sys.argv[1]).read(); print(float(re.search(r'N\*S = ([\d.]+) s', t).group(1)) / 500)" \
  "$out/pipeline_cuda_500.txt")
python benchmarks/pipeline_speed.py --simulate-gpu "$rate" --images 500 --size 500x375 --batch-size 16 --model "$work/real/blip-large-random" \
  --workdir "$work/simulated" 2>&1 | tee "$out/pipeline_simulated_500.txt"
grep -H -E "model stage busy|wall / ideal|^wall" "$out"/pipeline_*.txt
rm -rf "$work"
