#!/usr/bin/env bash
# Can the size=cpu softmax Transformer fit a small Pathfinder set at all? Trains it without
# dropout on 512 easy images (default style) for STEPS steps and fails unless the training
# accuracy of the last logged window reaches 95%. A check to run before a long Pathfinder
# run: a model that cannot memorise 512 images has a bug, not a hard task.
#   bash scripts/pathfinder_overfit.sh   # 1200 steps: 84 min on one shared CPU core (0.1-0.3 steps/s)
# Measured (results/cpu/pathfinder/overfit-512.json): 97.9% train accuracy by step 384 and 100% from
# step ~450 on; STEPS=480 is enough for the check.
set -euo pipefail
STEPS=${STEPS:-1200}
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/lra-pathfinder-overfit.XXXXXX)}
python3 -m lra.cli train --config pathfinder:model=softmax,size=cpu --workdir "$WORKDIR" \
  --config.data.num_train=512 --config.model.dropout=0 --config.model.attention_dropout=0 \
  --config.train.steps="$STEPS" --config.train.schedule=constant --config.train.warmup_steps=50 \
  --config.train.eval_every="$STEPS" --config.train.log_every=32
python3 - "$WORKDIR/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
train = [r for r in rows if "train_accuracy" in r]
last = train[-1]
print(json.dumps({"step": last["step"], "train_accuracy": last["train_accuracy"],
                  "train_loss": last["train_loss"],
                  "val_accuracy": [r["val_accuracy"] for r in rows if "val_accuracy" in r][-1]}))
sys.exit(0 if last["train_accuracy"] >= 0.95 else 1)
PY
