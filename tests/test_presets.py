"""configs/models.py: the size=nystrom presets are the Nystromformer authors' LRA config, AdaMRA
runs its paper defaults at every size, and every preset and bench variant names real
constructor keywords."""

import pytest
from lra.configs import models

from lra import attention
from lra.training import config

# mlpen/Nystromformer LRA/code/lra_config.py, written out by hand: per task the model and
# max_seq_len, and "extra_attn_config" per method, in this project's keyword names
# (rp_dim -> nb_features, linformer_k -> k, num_hash -> n_hashes).
NYSTROM_MAX_LEN = {"listops": 2000, "text": 4000, "retrieval": 4000, "image": 1024,
                   "pathfinder": 1024}
NYSTROM_ATTENTION = {
    "softmax": {},
    "linear": {},
    "nystrom": {"num_landmarks": 64, "conv_kernel_size": 35},  # nystrom-64
    "linformer": {"k": 256},  # linformer-256
    "reformer": {"n_hashes": 2},  # reformer-2
    "performer": {"nb_features": 256},  # performer-256 (kernel_type "relu": see models.py)
}


@pytest.mark.parametrize("task", NYSTROM_MAX_LEN)
def test_nystrom_size_is_the_nystromformer_lra_config(task):
    for method, kwargs in NYSTROM_ATTENTION.items():
        c = config.load(f"{task}:model={method},size=nystrom")
        assert c.model.attention_kwargs.to_dict() == kwargs, method
    m = c.model
    assert (m.num_layers, m.emb_dim, m.mlp_dim, m.num_heads, m.emb_dim // m.num_heads,
            m.pooling, m.pos_emb) == (2, 64, 128, 2, 32, "mean", "learned")
    assert c.data.max_len == NYSTROM_MAX_LEN[task]


def test_adamra_runs_its_paper_defaults_at_every_size():
    """AdaMRA Table 4 model 3 (H = 3, c = (1/2, 1/8, 1/32), S = 2) with no preset, and its
    coarsest segment (32 tokens) fits every sequence down to size=smoke."""
    defaults = attention.info("adamra").defaults
    assert defaults["compression_rates"] == (1 / 2, 1 / 8, 1 / 32) and defaults["subheads"] == 2
    for size in config.sizes():
        for task in ("listops", "text", "retrieval", "image", "pathfinder", "pathx"):
            c = config.load(f"{task}:model=adamra,size={size}")
            assert c.model.attention_kwargs.to_dict() == {}, (task, size)
            assert c.data.max_len >= 1 / min(defaults["compression_rates"]), (task, size)


def test_presets_and_variants_name_constructor_keywords():
    tables = [(m, kw) for m, by_size in models.PRESETS.items() for kw in by_size.values()]
    tables += [(m, kw) for m, by_size in models.TASK_PRESETS.items()
               for by_task in by_size.values() for kw in by_task.values()]
    tables += list(models.VARIANTS.values())
    for method, kwargs in tables:
        assert set(kwargs) <= set(attention.info(method).defaults), (method, kwargs)
    for group in models.GROUPS.values():
        for name in group:
            models.variant(name)  # a method or a variant


def test_table2_variants_are_adamras():
    """AdaMRA Table 2: Performer with 32 features, Nystromformer with 32 landmarks, and AdaMRA
    with four heads at rates (1/2, 1/4, 1/8, 1/16) and (1/4, 1/8, 1/16, 1/32)."""
    assert models.variant("performer-32") == ("performer", {"nb_features": 32})
    assert models.variant("nystrom-32") == ("nystrom", {"num_landmarks": 32})
    assert models.variant("adamra-1/2..1/16") == (
        "adamra", {"compression_rates": (0.5, 0.25, 0.125, 0.0625)})
    assert models.variant("adamra-1/4..1/32") == (
        "adamra", {"compression_rates": (0.25, 0.125, 0.0625, 0.03125)})
    assert models.variant("softmax") == ("softmax", {})


@pytest.mark.parametrize("size", ["nystrom", "lra"])
def test_scatterbrain_cluster_size_is_the_authors_per_task_value(size):
    """HazyResearch/fly configs/experiment/lra/<task>/sbsmyrf.yaml, written out by hand."""
    authors = {"listops": 32, "text": 16, "retrieval": 64, "image": 16, "pathfinder": 16}
    for task, cluster in authors.items():
        c = config.load(f"{task}:model=scatterbrain,size={size}")
        assert c.model.attention_kwargs.to_dict() == {"block_size": cluster}, task
