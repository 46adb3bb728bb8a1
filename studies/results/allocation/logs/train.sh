#!/usr/bin/env bash
# Study v3 retraining (issue 35), one run directory per call, the one recipe for every network:
# 8 cells, C = 16, auxiliary head, cutout 16, drop path 0.2, cosine lr 0.025, batch 96,
# 20 epochs on the 45,000 images outside the hold-out (config.json: test_fraction 0.1),
# evaluated on the 5,000 held-out images. Frozen code as in search.sh (/work/v3-src).
# Run from the repository root:
#   nohup setsid bash studies/results/allocation/logs/train.sh RUN_DIR >> LOG 2>&1 &
# Starts the training, or resumes it from its last checkpoint (written after every epoch).
set -euo pipefail
export PYTHONPATH="${ACA_SRC:-/work/v3-src}"
export TF_ENABLE_ONEDNN_OPTS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
export TF_CPP_MIN_LOG_LEVEL=2
run="$1"
bin=/work/main/.venv/bin
date -u +"== %Y-%m-%dT%H:%M:%SZ start $run (commit $(git -C "$PYTHONPATH" rev-parse --short HEAD))"
resume=()
if [ -d "$run/train_checkpoint" ]; then resume=(--resume); fi
exec "$bin/aca-train" "$run" --epochs 20 --batch-size 96 --cutout 16 --learning-rate 0.025 \
  "${resume[@]}"
