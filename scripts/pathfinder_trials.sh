#!/usr/bin/env bash
# Pathfinder-32 recipe trials, side by side on one GPU: does the size=cpu model leave chance,
# with how many images and steps? Each trial is `lra train` (or the CNN probe) on generated
# data; its eval log is copied to $DEST/<trial>.jsonl.
#   ROUND=1 DEST=results/gpu/pathfinder SECONDS_PER_TRIAL=400 bash scripts/pathfinder_trials.sh
set -uo pipefail
ROUND=${ROUND:-1}
DEST=${DEST:-results/gpu/pathfinder}
RUNS=${RUNS:-/tmp/pf-trials}
SECONDS_PER_TRIAL=${SECONDS_PER_TRIAL:-400}
EVAL_EVERY=${EVAL_EVERY:-1000}
export XLA_PYTHON_CLIENT_PREALLOCATE=false LRA_DATA_DIR=${LRA_DATA_DIR:-/tmp/lra-data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # run from the repository root
mkdir -p "$DEST" "$RUNS"

# Prepare each data variant once (20k / 200k images, LRA distractors / none).
python3 scripts/pathfinder_prepare_variants.py

DATA=$LRA_DATA_DIR/pathfinder/generate-32px-easy-seed0
BIG="--config.data.num_train=200000"
D0="--config.data.distractor_paddles=0"
NODROP="--config.model.dropout=0 --config.model.attention_dropout=0"
L4E64="--config.model.num_layers=4 --config.model.emb_dim=64 --config.model.mlp_dim=128 --config.model.num_heads=4"
L4E128="--config.model.num_layers=4 --config.model.emb_dim=128 --config.model.mlp_dim=256 --config.model.num_heads=8"
declare -A TRIALS
if [ "$ROUND" = 1 ]; then
  TRIALS=([cpu-20k]="" [cpu-200k]="$BIG" [cpu-200k-d0]="$BIG $D0"
          [cpu-200k-lr3e-3]="$BIG --config.train.lr=3e-3"
          [l4-e64-200k-b128]="$BIG $L4E64 --config.train.batch_size=128"
          [l4-e64-200k-b128-d0]="$BIG $L4E64 --config.train.batch_size=128 $D0")
else
  TRIALS=([cnn-20k]="cnn $DATA-n20000-1000-1000-v1" [cnn-200k-d0]="cnn $DATA-n200000-1000-1000-v1-d0"
          [cpu-20k-nodrop]="$NODROP" [cpu-200k-d0-nodrop-b128]="$BIG $D0 $NODROP --config.train.batch_size=128"
          [l4-e128-200k-d0-b256-lr5e-4-nodrop]="$BIG $D0 $L4E128 $NODROP --config.train.batch_size=256 --config.train.lr=5e-4")
fi
for name in "${!TRIALS[@]}"; do
  set -- ${TRIALS[$name]}
  if [ "${1:-}" = cnn ]; then
    timeout "$SECONDS_PER_TRIAL" python3 scripts/pathfinder_cnn_probe.py "$2" --steps 20000 \
      --eval-every 500 >"$RUNS/$name.jsonl" 2>"$RUNS/$name.log" &
  else
    timeout "$SECONDS_PER_TRIAL" python3 -c 'import sys; from lra.cli import main; sys.exit(main())' \
      train --config configs/pathfinder.py:model=softmax,size=cpu --workdir "$RUNS/$name" "$@" \
      --config.train.steps=30000 --config.train.eval_every="$EVAL_EVERY" >"$RUNS/$name.log" 2>&1 &
  fi
done
wait
for name in "${!TRIALS[@]}"; do
  src=$RUNS/$name/metrics.jsonl; [ -f "$src" ] || src=$RUNS/$name.jsonl
  cp "$src" "$DEST/$name.jsonl" || tail -n 5 "$RUNS/$name.log"
  python3 - "$DEST/$name.jsonl" "$name" <<'PY'
import json, sys
evals = [r for r in map(json.loads, open(sys.argv[1])) if "val_accuracy" in r]
print(sys.argv[2], [(r["step"], round(r["val_accuracy"], 3)) for r in evals])
PY
done
