#!/usr/bin/env bash
# Study v3 search (issue 35): one supernet on the default `aca` op set at 32x32.
# Frozen code: a worktree of commit 570fef4 at /work/v3-src
#   (git worktree add /work/v3-src 570fef4); the venv of the main checkout.
# Run from the repository root:
#   nohup setsid bash studies/results/allocation/logs/search.sh >> studies/results/allocation/logs/search.log 2>&1 &
# Starts the search, or resumes it from its last checkpoint (written after every epoch).
set -euo pipefail
export PYTHONPATH=/work/v3-src
export TF_ENABLE_ONEDNN_OPTS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
export TF_CPP_MIN_LOG_LEVEL=2
run=studies/results/allocation/search
bin=/work/main/.venv/bin
date -u +"== %Y-%m-%dT%H:%M:%SZ start (commit $(git -C /work/v3-src rev-parse --short HEAD))"
if [ -f "$run/checkpoint.npz" ]; then
  exec "$bin/aca-search" --resume "$run"
else
  exec "$bin/aca-search" --dataset ../shared/data/cifar10-jpeg/train.npz --test-fraction 0.1 \
    --search-images 12800 --epochs 10 --hessian-every 10 --seed 1 \
    --eval-cells 8 --eval-channels 16 --run-dir "$run"
fi
