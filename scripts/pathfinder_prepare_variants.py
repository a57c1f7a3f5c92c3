"""Prepare the generated Pathfinder-32 easy sets that scripts/pathfinder_trials.sh trains on."""

from configs.pathfinder import get_config
from lra import data

if __name__ == "__main__":   # the generator's worker processes import this file
    for n, distractors in ((20_000, None), (200_000, None), (200_000, 0)):
        c = get_config("model=softmax,size=cpu")
        c.data.num_train, c.data.distractor_paddles = n, distractors
        if not data.dataset_path(c).exists():
            print("prepared", data.prepare(c, "generate"), flush=True)
