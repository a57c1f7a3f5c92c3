"""Kernelised attention: feature maps and the linear-time core shared by several methods.

A kernelised method replaces exp(q.k / sqrt(d)) by a feature product phi(q).phi(k), so

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))

costs O(n m d) instead of O(n^2 d) (Katharopoulos et al. 2020, §3.2, Eq. 4-6).
Used by `linear` (phi = elu + 1), `performer` (FAVOR+) and `scatterbrain` (FAVOR+ plus a
sparse correction). This module registers no method.

FAVOR+ (Choromanski et al. 2020, "Rethinking Attention with Performers"):
  * positive random features (§2.3, Lemma 1):
        phi(x) = exp(w_r^T x - |x|^2 / 2) / sqrt(m),  r = 1..m,
    with x = q d^(-1/4) or k d^(-1/4), so that E[phi(q).phi(k)] = exp(q.k / sqrt(d));
  * orthogonal random features (§2.4): the rows w_r come in blocks of d mutually
    orthogonal directions (QR of a Gaussian matrix, signs fixed by diag(R) so that each
    block is Haar-distributed) and each row gets an independent chi(d) norm, the norm
    of a d-dimensional Gaussian vector, so that every row is marginally N(0, I_d).
Log-space stabilisation, as in the authors' reference implementation: a query's
features are divided by their own row maximum (a per-query constant, which cancels in
the normalised output) and the keys' features by one maximum over all real keys and
features of an example and head (a constant common to every key, which also cancels).
Choices left open by the paper:
  * the maxima are taken over the whole exponent w.x - |x|^2/2 (the reference takes
    them over w.x alone; both differ by per-row constants that cancel) and are
    `stop_gradient`-ed;
  * only the query features get the reference's small additive stabiliser `eps`
    (before the 1/sqrt(m) factor): it keeps every normaliser positive, because the
    largest key feature is exactly 1, while keeping the key features exact, so that
    the causal form below stays exactly causal;
  * causal: instead of one maximum over all keys (which would let a future key change
    the scale of the past), query i uses the running maximum over keys j <= i, so its
    output depends on keys j <= i only.

Causal prefix sums (Katharopoulos et al. 2020, §3.3, Eq. 9-10): the sequence is cut
into chunks of `CAUSAL_CHUNK` positions; each chunk's sum of phi(k_j) v_j^T is formed
once, chunks are combined by a parallel prefix scan (`lax.associative_scan`) whose
operator rescales two partial sums to their common maximum, and each query adds the
causally masked product with the keys of its own chunk. Memory is O(n m + n m d / chunk
+ n chunk), never an [L, m, d] cumulative sum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from lra.attention.base import pad_to_multiple

FEATURE_EPS = 1e-6  # additive stabiliser of query features (the reference's `eps`)
CAUSAL_CHUNK = 64  # positions per chunk of the causal prefix sums
_NEG = -1e30  # log-scale of a padded key: exp(_NEG - anything real) == 0


class RandomFeatures(nnx.Variable):
    """Non-trainable random projections (drawn at init, never updated by the optimiser)."""


def orthogonal_gaussian(key, num_rows: int, dim: int) -> jax.Array:
    """Block-orthogonal Gaussian matrix float32[num_rows, dim] (Performer §2.4).

    ceil(num_rows / dim) independent Haar-orthogonal d x d blocks, stacked and cut to
    `num_rows` rows; each row is rescaled to the norm of an independent N(0, I_d) vector.
    """
    n_blocks = -(-num_rows // dim)
    k_blocks, k_norms = jax.random.split(key)
    gauss = jax.random.normal(k_blocks, (n_blocks, dim, dim), jnp.float32)
    q, r = jnp.linalg.qr(gauss)
    q = q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]
    rows = jnp.swapaxes(q, -1, -2).reshape(n_blocks * dim, dim)[:num_rows]
    norms = jnp.linalg.norm(jax.random.normal(k_norms, (num_rows, dim), jnp.float32), axis=-1)
    return rows * norms[:, None]


def favor_log_features(x: jax.Array, w: jax.Array) -> jax.Array:
    """Exponents w_r.x' - |x'|^2/2 with x' = x d^(-1/4): float32[..., m] for x: [..., d]."""
    x = x.astype(jnp.float32) * x.shape[-1] ** -0.25
    proj = jnp.einsum("...d,md->...m", x, w, preferred_element_type=jnp.float32)
    return proj - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)


def favor_features(x: jax.Array, w: jax.Array, *, is_query: bool, eps: float = FEATURE_EPS):
    """FAVOR+ positive features, stabilised per row.

    x: [..., d]; w: [m, d]. Returns (features float32[..., m], log_scale float32[...]) with
    phi(x) = exp(log_scale) * features; the largest entry of each row of `features` is
    1/sqrt(m) (plus eps/sqrt(m) for queries).
    """
    logits = favor_log_features(x, w)
    log_scale = lax.stop_gradient(jnp.max(logits, axis=-1))
    # 1/sqrt(m) folded into the exponent: one feature tensor, not a scaled copy of it
    feats = jnp.exp(logits - (log_scale[..., None] + 0.5 * math.log(w.shape[0])))
    if is_query:
        feats = feats + eps / math.sqrt(w.shape[0])
    return feats, log_scale


def elu_features(x: jax.Array) -> jax.Array:
    """phi(x) = elu(x) + 1 (Katharopoulos et al. 2020, §3.2.1, Eq. 7), float32."""
    return jax.nn.elu(x.astype(jnp.float32)) + 1.0


def heads_first(x: jax.Array) -> jax.Array:
    """[B, L, H, ...] <-> [B, H, L, ...]: the layout of this module's functions."""
    return jnp.swapaxes(x, 1, 2)


def kernel_attention(fq, fk, v, mask, *, key_log_scale=None, causal: bool = False,
                     chunk: int = CAUSAL_CHUNK):
    """Unnormalised kernelised attention, heads first ([B, H, L, .]), in float32.

    fq: query features [B, H, L, m]; fk: key features [B, H, L, m], the true features
    being exp(key_log_scale) * fk (key_log_scale [B, H, L], None = 0); v: [B, H, L, Dh];
    mask: bool[B, L]. Padded keys contribute nothing. Returns (num [B, H, L, Dh],
    den [B, H, L], offset [B, H, L]) with

        sum_j fq_i . phi(k_j) v_j = exp(offset_i) num_i,   same for den with v_j = 1,

    the sums running over real keys j (j <= i when causal). `mask` may also be bool[B, H, L]
    (keys in a per-head order). The per-key weights are folded into v, so no rescaled
    copy of the wide key features is made.
    """
    fq, fk, v = (t.astype(jnp.float32) for t in (fq, fk, v))
    real = mask[:, None] if mask.ndim == 2 else mask
    c = jnp.zeros(fk.shape[:3], jnp.float32) if key_log_scale is None else key_log_scale
    c = lax.stop_gradient(jnp.where(real, c.astype(jnp.float32), _NEG))
    if causal:
        return _causal(fq, fk, v, real, c, chunk)
    top = jnp.max(c, axis=2, keepdims=True)
    wk = jnp.where(real, jnp.exp(c - top), 0.0)
    kv = jnp.einsum("bhlm,bhld->bhmd", fk, v * wk[..., None])
    num = jnp.einsum("bhlm,bhmd->bhld", fq, kv)
    den = jnp.einsum("bhlm,bhm->bhl", fq, jnp.einsum("bhlm,bhl->bhm", fk, wk))
    return num, den, jnp.broadcast_to(top, den.shape)


def _rescaled_sum(a, b):
    """Associative operator on (log-scale, kv, z) partial sums: both to the larger scale."""
    top = jnp.maximum(a[0], b[0])
    sa, sb = jnp.exp(a[0] - top), jnp.exp(b[0] - top)
    return (top, sa[..., None, None] * a[1] + sb[..., None, None] * b[1],
            sa[..., None] * a[2] + sb[..., None] * b[2])


def _causal(fq, fk, v, real, c, chunk):
    """Chunked causal prefix sums; see the module docstring. real: bool[B, H or 1, L]."""
    length = fq.shape[2]
    fq, fk, v = (pad_to_multiple(t, chunk, axis=2) for t in (fq, fk, v))
    real = pad_to_multiple(real, chunk, axis=2, value=False)
    c = pad_to_multiple(c, chunk, axis=2, value=_NEG)
    b, h, lp, _ = fq.shape
    n = lp // chunk
    fq, fk, v = (t.reshape(b, h, n, chunk, -1) for t in (fq, fk, v))
    c, real = c.reshape(b, h, n, chunk), real.reshape(b, -1, n, chunk)

    # Per-chunk sums, each at its own chunk maximum, then an exclusive prefix scan.
    top = jnp.max(c, axis=3)
    wk = jnp.where(real, jnp.exp(c - top[..., None]), 0.0)
    kv = jnp.einsum("bhncm,bhncd->bhnmd", fk, v * wk[..., None])
    z = jnp.einsum("bhncm,bhnc->bhnm", fk, wk)
    pre_top, pre_kv, pre_z = lax.associative_scan(_rescaled_sum, (top, kv, z), axis=2)
    shift = lambda t, fill: jnp.concatenate(
        [jnp.full_like(t[:, :, :1], fill), t[:, :, :-1]], axis=2)
    pre_top, pre_kv, pre_z = shift(pre_top, _NEG), shift(pre_kv, 0.0), shift(pre_z, 0.0)

    # Query i's scale: running maximum over keys j <= i.
    offset = jnp.maximum(lax.cummax(c, axis=3), pre_top[..., None])
    inter = jnp.exp(pre_top[..., None] - offset)
    num = jnp.einsum("bhnim,bhnmd->bhnid", fq, pre_kv) * inter[..., None]
    den = jnp.einsum("bhnim,bhnm->bhni", fq, pre_z) * inter

    allowed = jnp.tril(jnp.ones((chunk, chunk), bool)) & real[..., None, :]
    rel = jnp.where(allowed, c[..., None, :] - offset[..., :, None], _NEG)
    weights = jnp.einsum("bhnim,bhnjm->bhnij", fq, fk) * jnp.where(allowed, jnp.exp(rel), 0.0)
    num = num + jnp.einsum("bhnij,bhnjd->bhnid", weights, v)
    den = den + jnp.sum(weights, axis=-1)
    unchunk = lambda t: t.reshape(b, h, lp, *t.shape[4:])[:, :, :length]
    return unchunk(num), unchunk(den), unchunk(offset)


def normalise(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den with a zero output where the normaliser vanished (no real key)."""
    return num / jnp.where(den > 0, den, 1.0)[..., None]
