"""One run, from a config to its summary: config loading and validation, the Trainer and its
loop, the optimizer, checkpoints and the workdir."""
