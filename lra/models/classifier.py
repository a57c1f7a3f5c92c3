"""LRA heads: single-input classifier and the Retrieval dual encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lra import attention
from lra.errors import LRAError
from lra.models.embeddings import Embedding
from lra.models.encoder import Encoder

POOLINGS = ("cls", "mean")
INTERACTIONS = ("uvdiff", "uv")


def padding_mask(lengths: jax.Array, length: int) -> jax.Array:
    """bool[B, L] from sequence lengths (not from token ids: a black pixel is token 0)."""
    return jnp.arange(length)[None, :] < lengths[:, None]


def pool(x: jax.Array, mask: jax.Array, how: str) -> jax.Array:
    """CLS: the first slot. mean: the mean over real tokens only."""
    if how == "cls":
        return x[:, 0]
    w = mask[..., None].astype(x.dtype)
    return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


class Tower(nnx.Module):
    """Embedding + encoder + pooling: ids -> one vector per example."""

    def __init__(self, m, vocab_size: int, max_len: int, *, rngs: nnx.Rngs):
        if m.pooling not in POOLINGS:
            raise LRAError(f"model.pooling={m.pooling!r}; valid: {', '.join(POOLINGS)}")
        if m.pos_emb not in ("learned", "sinusoidal"):
            raise LRAError(f"model.pos_emb={m.pos_emb!r}; valid: learned, sinusoidal")
        cls = m.pooling == "cls"
        self.pooling, self.zero_is_padding = m.pooling, bool(m.zero_is_padding)
        self.embed = Embedding(vocab_size, m.emb_dim, max_len, pos_emb=m.pos_emb, with_cls=cls,
                               rngs=rngs)
        self.dropout = nnx.Dropout(m.dropout, rngs=rngs)
        attn_cfg = attention.AttentionConfig(
            dim=m.emb_dim, num_heads=m.num_heads, max_len=max_len + int(cls),
            dropout=m.attention_dropout, causal=m.causal, impl=m.impl)
        self.encoder = Encoder(attn_cfg, m.attention, dict(m.attention_kwargs),
                               num_layers=m.num_layers, mlp_dim=m.mlp_dim, dropout=m.dropout,
                               rngs=rngs)

    def __call__(self, ids, lengths, *, deterministic: bool):
        mask = padding_mask(lengths, ids.shape[1])
        if self.zero_is_padding:  # the LRA code's mask, inputs > 0: no key, not pooled
            mask = mask & (ids != 0)
        x, mask = self.embed(ids, mask)
        x = self.dropout(x, deterministic=deterministic)
        x = self.encoder(x, mask, deterministic=deterministic)
        return pool(x, mask, self.pooling)


class Head(nnx.Module):
    """The LRA classifier head: Dense, ReLU, Dense."""

    def __init__(self, dim: int, hidden: int, num_classes: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.fc1(x)))


class Classifier(nnx.Module):
    def __init__(self, m, vocab_size: int, max_len: int, num_classes: int, *, rngs: nnx.Rngs):
        self.tower = Tower(m, vocab_size, max_len, rngs=rngs)
        self.head = Head(m.emb_dim, m.classifier_dim or m.mlp_dim, num_classes, rngs=rngs)

    def __call__(self, batch, *, deterministic: bool):
        return self.head(self.tower(batch["inputs"], batch["lengths"], deterministic=deterministic))


class DualEncoder(nnx.Module):
    """Retrieval: one shared tower for both documents, then [u, v, u*v, u-v] (or [u, v])."""

    def __init__(self, m, vocab_size: int, max_len: int, num_classes: int, *, rngs: nnx.Rngs):
        if m.interaction not in INTERACTIONS:
            raise LRAError(f"model.interaction={m.interaction!r}; valid: {', '.join(INTERACTIONS)}")
        self.interaction = m.interaction
        self.tower = Tower(m, vocab_size, max_len, rngs=rngs)
        width = m.emb_dim * (4 if m.interaction == "uvdiff" else 2)
        self.head = Head(width, m.classifier_dim or m.mlp_dim, num_classes, rngs=rngs)

    def __call__(self, batch, *, deterministic: bool):
        u = self.tower(batch["inputs"], batch["lengths"], deterministic=deterministic)
        v = self.tower(batch["inputs2"], batch["lengths2"], deterministic=deterministic)
        feats = [u, v, u * v, u - v] if self.interaction == "uvdiff" else [u, v]
        return self.head(jnp.concatenate(feats, axis=-1))


def build(config, meta: dict, *, seed: int) -> nnx.Module:
    """The model for `config` over data described by `meta` (vocab_size, num_classes, max_len)."""
    cls = DualEncoder if meta.get("dual") else Classifier
    rngs = nnx.Rngs(params=seed, dropout=seed + 1)
    return cls(config.model, meta["vocab_size"], meta["max_len"], meta["num_classes"], rngs=rngs)
