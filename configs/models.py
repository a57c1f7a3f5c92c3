"""Per-method presets on top of each method's own (paper) defaults; configs/README.md has
the table of what each size is.

A method's constructor defaults are its paper's. A preset records:
- size=nystrom: the values of the Nystromformer authors' LRA config for the methods it
  names (mlpen/Nystromformer, LRA/code/lra_config.py, "extra_attn_config"), pinned even
  where they equal the defaults, so that the protocol is written down in one place;
- size=lra: the LRA code's values where they differ from the paper's;
- size=smoke/cpu: smaller blocks where the paper's would cover a whole short sequence.

VARIANTS are named variants of a method, usable wherever a model name is (`lra train
--config text:model=adamra-rand`, `lra sweep --models`, `lra bench --models`, the report's
rows): AdaMRA Table 2's bench rows and the AdaMRA ablations of Tables 4-5. GROUPS are named
lists of bench rows (`lra bench --models table2`).
"""

from __future__ import annotations

from lra import attention
from lra.errors import LRAError

# {method: {size: {hyperparameter: value}}}
PRESETS: dict[str, dict[str, dict]] = {}

# Block-sparse family: the papers' blocks (128, 64, 50) cover a whole smoke sequence.
PRESETS["sparse_strided"] = {"smoke": {"stride": 8}}
PRESETS["sparse_fixed"] = {"smoke": {"stride": 16, "summary": 4}}
PRESETS["bigbird"] = {"smoke": {"block_size": 8, "random_blocks": 1}}
PRESETS["local"] = {"smoke": {"block_size": 16}}
# Content-based sparse: k = 64, buckets of 64 and local windows of 256 cover a smoke sequence.
PRESETS["topk"] = {"smoke": {"k": 8, "chunk": 16}}
PRESETS["routing"] = {"smoke": {"local_window": 16}}
# Reformer: lra_config "reformer-2" = {"num_hash": 2} (Hugging Face LSHSelfAttention, chunks of 64).
PRESETS["reformer"] = {"smoke": {"bucket_size": 8}, "nystrom": {"n_hashes": 2}}
# Performer: lra_config "performer-256" = {"rp_dim": 256, "kernel_type": "relu"}. Its wrapper
# passes kernel_fn=ReLU to performer_pytorch's FastAttention without generalized_attention=True,
# so the features that run are FAVOR+ softmax ones: those of this Performer.
PRESETS["performer"] = {"nystrom": {"nb_features": 256}}
# Linformer: lra_config "linformer-256" = {"linformer_k": 256}; the LRA code uses k = 16 with
# one matrix for K, V and heads.
PRESETS["linformer"] = {"smoke": {"k": 16}, "nystrom": {"k": 256},
                        "lra": {"k": 16, "sharing": "kv"}}
# Nystromformer: lra_config "nystrom-64" = {"num_landmarks": 64, "conv_kernel_size": 35}; at
# smoke size 64 landmarks would be one token each (exact softmax), so use 8.
PRESETS["nystrom"] = {"smoke": {"num_landmarks": 8},
                      "nystrom": {"num_landmarks": 64, "conv_kernel_size": 35},
                      "lra": {"conv_kernel_size": 35}}
# AdaMRA: no preset. Its defaults are the paper's LRA model (Table 4 model 3: H = 3,
# c = (1/2, 1/8, 1/32), S = 2, phi = ReLU) at every size; segments of at most 32 tokens fit
# every smoke and cpu sequence (64 tokens and more).


# Per-task values, {method: {size: {task: {hyperparameter: value}}}}, on top of PRESETS.
# Local attention: the LRA configs use blocks of 64 on the image tasks
# (lra_benchmarks/image/configs), 50 elsewhere.
# Scatterbrain: the cluster sizes of the authors' LRA configs (HazyResearch/fly,
# configs/experiment/lra/<task>/sbsmyrf.yaml; nb_features follows the cluster size); their
# sequence lengths are those of both sizes. Path-X is not in them: Pathfinder's value.
# These are the sbsmyrf (sparse="lsh") values; with sparse="local" the authors' window is 2c
# (sblocal.yaml), so set block_size to twice these.
_SCATTERBRAIN_TASKS = {"listops": {"block_size": 32}, "text": {"block_size": 16},
                       "retrieval": {"block_size": 64}, "image": {"block_size": 16},
                       "pathfinder": {"block_size": 16}, "pathx": {"block_size": 16}}
TASK_PRESETS: dict[str, dict[str, dict[str, dict]]] = {
    "local": {"lra": {"image": {"block_size": 64}, "pathfinder": {"block_size": 64},
                      "pathx": {"block_size": 64}}},
    "scatterbrain": {"lra": _SCATTERBRAIN_TASKS, "nystrom": _SCATTERBRAIN_TASKS},
}

# Variants, {name: (method, hyperparameters on top of the method's preset)}. Bench rows: those of
# AdaMRA Table 2 that are not a method at its preset ("Performer-32", "Nystromformer-32",
# "Ours-(1/2,1/4,1/8,1/16)", "Ours-(1/4,1/8,1/16,1/32)": four heads, one per rate).
VARIANTS: dict[str, tuple[str, dict]] = {
    "performer-32": ("performer", {"nb_features": 32}),
    "nystrom-32": ("nystrom", {"num_landmarks": 32}),
    "adamra-1/2..1/16": ("adamra", {"compression_rates": (1 / 2, 1 / 4, 1 / 8, 1 / 16)}),
    "adamra-1/4..1/32": ("adamra", {"compression_rates": (1 / 4, 1 / 8, 1 / 16, 1 / 32)}),
    # Not a Table 2 row: the Sparse Transformer's per-head split of A(1), A(2) (§5.1, Eq. 7)
    # beside its merged default, to compare their cost side by side.
    "sparse_fixed-split": ("sparse_fixed", {"heads": "split"}),
    # AdaMRA's ablations (Tables 4-5), named for run folders (no '/'). Table 4 model 3 and
    # Table 5's ReLU row are the method's defaults: `adamra` itself.
    "adamra-r4-32": ("adamra", {"compression_rates": (1 / 4, 1 / 32)}),  # Table 4 model 1
    "adamra-r4-8-16-32": ("adamra", {"compression_rates": (1 / 4, 1 / 8, 1 / 16, 1 / 32)}),  # 5
    "adamra-r2x3": ("adamra", {"compression_rates": (1 / 2, 1 / 2, 1 / 2)}),  # 9: one resolution
    "adamra-r4x3": ("adamra", {"compression_rates": (1 / 4, 1 / 4, 1 / 4)}),  # 10: one resolution
    # Table 5 "Rand": each position sent to a head drawn at init. Its gate is 1 whatever `gate`
    # says; gate="mask" records that. `adamra-mask` (the learned router with that same unscaled
    # gate, the paper's literal wording) is the control that changes only the routing.
    "adamra-rand": ("adamra", {"router": "random", "gate": "mask"}),
    "adamra-mask": ("adamra", {"gate": "mask"}),
    "adamra-softmax": ("adamra", {"feature_map": "softmax"}),  # Table 5 "Softmax"
    "adamra-elu": ("adamra", {"feature_map": "elu+1"}),  # Table 5 "ELU+1"
}

# Named lists of bench rows: AdaMRA Table 2 (and Table 3, its SMAT) in the paper's order.
GROUPS: dict[str, tuple[str, ...]] = {
    "table2": ("softmax", "bigbird", "reformer", "linformer", "linear", "performer-32",
               "nystrom-32", "adamra-1/2..1/16", "adamra-1/4..1/32"),
}


def preset(name: str, size: str, task: str | None = None) -> dict:
    """Hyperparameter overrides for `name` at `size` on `task` (validates the method name)."""
    attention.info(name)
    out = dict(PRESETS.get(name, {}).get(size, {}))
    if task:
        out.update(TASK_PRESETS.get(name, {}).get(size, {}).get(task, {}))
    return out


def variant(name: str) -> tuple[str, dict]:
    """(method, hyperparameters on top of its preset) of a model name: a VARIANTS name or a
    method (no hyperparameters)."""
    if name in VARIANTS:
        method, kwargs = VARIANTS[name]
        return method, dict(kwargs)
    if name not in attention.names():
        raise LRAError(f"unknown model {name!r} (neither an attention method nor a variant); "
                       f"valid: methods "
                       f"{', '.join(attention.names())}; variants {', '.join(VARIANTS)}")
    return name, {}
