"""The LRA table at CPU scale (issue 19, claims 3-4): every attention method of the registry
on ListOps and Text at size=cpu, three seeds, for `lra sweep --from configs/claims_lra.py`.

PAPER holds each method's ListOps and Text accuracy (%) in the papers' Table 1, for the
builder (scripts/claim_lra_table.py) to print beside the harness's: LRA Table 1 (Tay et al.
2020; checked row by row against the authors' leaderboard README) and AdaMRA Table 1
(Zhang et al. 2021, seed 001; the Nystromformer protocol, its Transformer, Reformer,
Linformer, Performer and Nystromformer rows taken from Xiong et al. 2021). LRA's "Sparse
Trans." does not say which of Child et al.'s patterns it ran: both rows carry it. None
means the table has no row for the method. SMAT_PAPER is AdaMRA Table 3's SMAT score.
"""

TASKS = ("listops", "text")
SIZE = "cpu"
SEEDS = (0, 1, 2)
MODELS = ("softmax", "adamra", "bigbird", "linear", "linformer", "local", "nystrom", "performer",
          "reformer", "routing", "scatterbrain", "sparse_fixed", "sparse_strided", "topk")
# method: (LRA Table 1 (ListOps, Text), AdaMRA Table 1 (ListOps, Text))
PAPER = {
    "softmax": ((36.37, 64.27), (37.10, 65.02)),
    "adamra": (None, (40.40, 68.44)),
    "bigbird": ((36.05, 64.02), (38.55, 63.90)),
    "linear": ((16.13, 65.90), (37.35, 64.15)),
    "linformer": ((35.70, 53.94), (37.25, 55.91)),
    "local": ((15.82, 52.98), None),
    "nystrom": (None, (37.15, 65.52)),
    "performer": ((18.01, 65.40), (18.80, 63.81)),
    "reformer": ((37.27, 56.10), (19.05, 64.88)),
    "routing": (None, None),
    "scatterbrain": (None, None),
    "sparse_fixed": ((17.07, 63.58), None),
    "sparse_strided": ((17.07, 63.58), None),
    "topk": (None, None),
}
# AdaMRA Table 3 (IMDb at 4K, batch 8, Tesla T4): SMAT = S + (1 - M) + A, Eq. 10
SMAT_PAPER = {"adamra": 2.76, "linear": 2.48, "performer": 1.67, "linformer": 1.61,
              "nystrom": 1.54, "bigbird": 1.43, "reformer": 1.37, "softmax": 0.54}


def sweep():
    return [dict(task=task, model=model, size=SIZE, seed=seed)
            for task in TASKS for model in MODELS for seed in SEEDS]
