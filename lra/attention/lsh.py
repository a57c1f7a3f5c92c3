"""Angular locality-sensitive hashing and bucket sorting, shared by Reformer and Scatterbrain.

Angular LSH (Andoni et al. 2015, "Practical and Optimal LSH for Angular Distance";
used by Kitaev et al. 2020, "Reformer", §2): draw a random Gaussian matrix R of shape
[d_k, b/2] and hash a vector x to

    h(x) = argmax([x R ; -x R])                         (Reformer §2, "LSH attention")

so that vectors pointing in nearby directions share a bucket with high probability.
Each of the `n_hashes` rounds and each head has its own R. The hash depends only on
the direction of x, so normalising x first would not change it.

Padded tokens get the bucket id `n_buckets`, past every real bucket, so that sorting
places them after every real token and they never shift real tokens between chunks.
This module registers no method.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lra.errors import LRAError


def random_rotations(key, num_heads: int, head_dim: int, n_buckets: int, n_hashes: int):
    """Gaussian projections R: float32[n_hashes, H, Dh, n_buckets // 2] (one per round, head)."""
    if n_buckets < 2 or n_buckets % 2:
        raise LRAError(
            f"model.attention_kwargs.n_buckets={n_buckets}: LSH needs an even number of "
            "buckets >= 2 (by default 2 ceil(max_len / bucket_size))"
        )
    shape = (n_hashes, num_heads, head_dim, n_buckets // 2)
    # Drawn flat: on CPU, XLA compiles an N-d normal draw far more slowly than a 1-d one.
    return jax.random.normal(key, (math.prod(shape),), jnp.float32).reshape(shape)


def hash_vectors(x, rotations, mask, n_buckets: int):
    """Bucket ids int32[n_hashes, B, H, L] of x: [B, L, H, Dh]; padded tokens get `n_buckets`.

    `rotations` comes from `random_rotations`; `mask` is bool[B, L], True at real tokens.
    """
    if 2 * rotations.shape[-1] != n_buckets:
        raise ValueError(f"rotations have {2 * rotations.shape[-1]} buckets, not {n_buckets}")
    rotated = jnp.einsum(
        "blhd,rhdk->rbhlk", x.astype(jnp.float32), rotations,
        preferred_element_type=jnp.float32,
    )
    buckets = jnp.argmax(jnp.concatenate([rotated, -rotated], axis=-1), axis=-1)
    return jnp.where(mask[None, :, None, :], buckets, n_buckets).astype(jnp.int32)


def sort_by_bucket(buckets):
    """Stable sort along the last axis by (bucket, position).

    Returns (perm, inverse), both int32 with the shape of `buckets`:
    `take_along_axis(buckets, perm, -1)` is sorted, and `take_along_axis(sorted, inverse, -1)`
    restores the original order.
    """
    perm = jnp.argsort(buckets, axis=-1, stable=True).astype(jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(buckets.shape[-1], dtype=jnp.int32), buckets.shape)
    inverse = jnp.put_along_axis(
        jnp.zeros_like(perm), perm, positions, axis=-1, inplace=False
    )
    return perm, inverse
