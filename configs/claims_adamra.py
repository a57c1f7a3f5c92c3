"""The grid of AdaMRA's ablations (Zhang et al. 2021, Tables 4-5) at size=cpu, for
`lra sweep --from configs/claims_adamra.py`.

ROWS are the paper's rows in its order: (table, paper row, model name, paper Text accuracy);
a model is a method or a variant of configs/models.py. Table 4 model 3 and Table 5's ReLU
row are both `adamra` (its defaults), trained once. `adamra-mask` is not a paper row: the
learned router with the unscaled gate, the control that `adamra-rand` differs from only in
the routing. scripts/claim_adamra_ablations.py builds the table from the runs.
"""

TASKS = ("text", "listops")
SIZE = "cpu"
SEEDS = (0, 1, 2)
ROWS = (
    ("Table 4", "1: (1/4, 1/32)", "adamra-r4-32", 66.8),
    ("Table 4", "3: (1/2, 1/8, 1/32)", "adamra", 68.4),
    ("Table 4", "5: (1/4, 1/8, 1/16, 1/32)", "adamra-r4-8-16-32", 68.2),
    ("Table 4", "9: (1/2, 1/2, 1/2)", "adamra-r2x3", 64.11),
    ("Table 4", "10: (1/4, 1/4, 1/4)", "adamra-r4x3", 63.38),
    ("Table 5", "Transformer", "softmax", 65.02),
    ("Table 5", "Rand", "adamra-rand", 64.64),
    ("Table 5", "Softmax", "adamra-softmax", 65.56),
    ("Table 5", "ELU+1", "adamra-elu", 66.33),
    ("Table 5", "ReLU", "adamra", 68.44),
    ("control", "learned router, gate mask", "adamra-mask", None),
)
MODELS = tuple(dict.fromkeys(model for _, _, model, _ in ROWS))


def sweep():
    return [dict(task=task, model=model, size=SIZE, seed=seed)
            for task in TASKS for model in MODELS for seed in SEEDS]
