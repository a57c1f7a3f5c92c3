#!/usr/bin/env bash
# Pathfinder-32 hard, as the LRA drew it (data.style=lra), on one GPU in about 9 minutes:
# draw TRAIN images on every CPU core, train the size=lra softmax Transformer for
# TRAIN_SECONDS, evaluating every EVAL_EVERY steps, and copy its metrics log to $DEST.
#   DEST=results/gpu/pathfinder bash scripts/pathfinder_gpu.sh
set -uo pipefail
DEST=${DEST:-results/gpu/pathfinder}
TRAIN=${TRAIN:-40000}
TRAIN_SECONDS=${TRAIN_SECONDS:-300}
EVAL_EVERY=${EVAL_EVERY:-250}
WORKDIR=${WORKDIR:-/tmp/pathfinder-gpu}
export XLA_PYTHON_CLIENT_PREALLOCATE=false LRA_DATA_DIR=${LRA_DATA_DIR:-/tmp/lra-data}
SETS="--config.data.num_train=$TRAIN --config.data.num_val=2000 --config.data.num_test=2000"
mkdir -p "$DEST"
start=$(date +%s)
python3 -m lra.cli data prepare pathfinder --size lra $SETS || exit 1
echo "prepared $TRAIN + 4000 hard images in $(( $(date +%s) - start )) s"
timeout "$TRAIN_SECONDS" python3 -m lra.cli train --workdir "$WORKDIR" \
  --config pathfinder:model=softmax,size=lra $SETS \
  --config.train.eval_every="$EVAL_EVERY" --config.train.log_every=50
cp "$WORKDIR/metrics.jsonl" "$DEST/softmax-lra-hard-$TRAIN.jsonl"
python3 - "$DEST/softmax-lra-hard-$TRAIN.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print([(r["step"], round(r["val_accuracy"], 3), round(r["train_loss"], 3)) for r in rows])
PY
