"""`lra approx`: how far each method's attention is from exact softmax attention.

Two measures (`--measure`), each a relative Frobenius error over the real query positions
of every head, with each method's `core(q, k, v, mask, deterministic=True)` (its
projections are bypassed, so every method sees the same q, k, v):

- output (default): ||O_method - O||_F / ||O||_F, O = softmax(q k^T / sqrt(d)) v.
- matrix: ||A_method - A||_F / ||A||_F of the row-normalised attention matrix
  A = softmax(q k^T / sqrt(d)): Scatterbrain's Figure 1 (left) and Figure 7 (Chen et al.
  2021) plot errors of attention matrices rather than of outputs (the row normalisation
  is our choice; their §3 reasons about the unnormalised exp(beta Q Q^T)). A method's
  matrix is read through its own `core`: with v the columns j Dh .. (j + 1) Dh - 1 of
  the L x L identity (j = 0 .. ceil(L / Dh) - 1, the same columns in every head),
  O = A_method v is that slice of A_method. Every method is linear in v, so no method
  needs a matrix interface; the slices are summed one at a time, so no L x L matrix of
  the method is kept.

Three sources of q, k, v (`--inputs`, or `--checkpoint`):

(a) gaussian (default): q, k, v with i.i.d. N(0, 1) entries, the queries divided by a
    softmax temperature T for several T. Our choice: no structure favours a method and
    the temperature alone sets the entropy of the attention. One example of 4 heads of 32
    channels; the mean row entropy of the exact attention is reported with each T.
(b) clustered: the generative model of Scatterbrain §3 (Chen et al. 2021): the tokens form
    clusters, queries equal keys, and the unnormalised attention is exp(beta Q Q^T), with
    beta the inverse softmax temperature and Delta the intra-cluster distance (their
    Figure 2). Their analysis of it (§3, Theorem 1): low-rank approximations suffice at
    small beta (below the order of log n), sparse ones at beta well above log n, and in
    between the sparse part must hold the attention within a cluster and the low-rank
    part the rest.
    Our instance (the sizes are ours): clusters of `cluster_size` = 8 tokens at random
    positions (so that no locality favours windowed methods), unit-norm random centres c,
    members z = (c + r) / |c + r| with r ~ N(0, Delta^2 I / d), Delta = `delta` = 0.5, one
    draw per head, d = 32; q = k = sqrt(beta) d^(1/4) z, so that q.k / sqrt(d) = beta z.z,
    with beta = 1 / T; v ~ N(0, 1). Every token lies on the unit sphere (the setting of
    the authors' error analysis, HazyResearch/scatterbrain analysis/mse_plot.py, |q| =
    |k| = 1), so its own logit is beta and a cluster mate's about beta / (1 + Delta^2);
    with unequal norms a few long tokens would dominate every row, and the Reformer
    (below) could not see the same logits. The default temperatures put beta at 1 .. 32,
    around log L (6.2 at L = 512).
(c) a trained checkpoint (`--checkpoint WORKDIR`): the best checkpoint of a run is
    restored, a batch of validation examples goes through it, and at every layer the
    q, k, v of that layer's own projections (`project`) are taken, at T = 1. This is the
    closest to Scatterbrain's Figure 1 (left), which plots the error of the attention
    matrices of trained models (an IMDb classifier, a WikiText-103 language model,
    BigGAN) against their entropy; use it with `--measure matrix`. Their robust-PCA
    (sparse + low-rank oracle) curve is not computed here.

Matched budget: each method gets the hyperparameters that give it about `budget` keys
or features per query (each method's `budget`, given to `attention.register`; e.g. Top-k k = b, Performer b
features, Linformer and Nystromformer b projected keys or landmarks, Reformer 2 rounds of
two chunks of b/4,
BigBird 8 blocks of b/8). Scatterbrain gets half of each of its parts: b/2 features and
2 hash rounds of chunks of b/4 (at most b/2 keys), as the authors pair them (their LRA
and T2T-ViT configs give Scatterbrain half the Performer's features and half SMYRF's
cluster size at the same 2 rounds); its feature map is the Performer's positive one
(`feature_map="positive"`, not its hyperbolic default), so that its low-rank part is the
Performer column's estimator with half the features. A method without such a knob
(linear, AdaMRA) keeps its defaults. With a checkpoint, the method's preset for the run's
size comes first (configs/models.py).

How methods with their own layer are compared:
- Reformer is shared-QK (Kitaev et al. 2020, §2): its keys are the normalised queries and
  it ignores k. Its reference is the exact attention of that layer: logits
  q_i . (q_j / ||q_j||) / (sqrt(d) T), a token's own key excluded unless it is the only one.
  On clustered inputs it is given q = beta sqrt(d) z instead (`shared_qk=True`): with
  unit-norm z its logits are then beta z_i.z_j, those of every other method, its own key
  aside. (Given the others' q, its logits would grow like sqrt(beta): its attention would
  stay near uniform at every T, and its matrix error near sqrt(L / b) = 2.8.)
- AdaMRA's router and Linformer's length projections are parameters of the method, not
  projections of x: they act inside `core` with their initial (random) values, so the
  measure is of the untrained method on the given q, k, v. AdaMRA does not aim at softmax
  (ReLU kernel over compressed keys); its error is shown for completeness.
- Routing's centroids are untrained (random) here, for all three sources.

Reading the numbers: at a high temperature the exact output tends to the mean of v, whose
norm shrinks like 1/sqrt(L) for random v, so relative output errors above 1 are common
there. A method that cannot be built for the shapes (an LRAError) or fails is listed as
not measured and the others go on.
"""

from __future__ import annotations

import logging
import math
import shlex
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lra import attention
from lra.attention.base import AttentionConfig, dense_attention, mask_value
from lra.errors import LRAError
from lra.experiments.report import Table, csv_text, markdown, write_text
from lra.training import config

log = logging.getLogger(__name__)

TEMPERATURES = (0.125, 0.25, 0.5, 1.0, 2.0)
CLUSTERED_TEMPERATURES = (0.03125, 0.0625, 0.125, 0.25, 0.5, 1.0)  # beta = 32 .. 1
INPUTS = ("gaussian", "clustered")
MEASURES = ("output", "matrix")
SHARED_QK = ("reformer",)


def exact(name: str, q, k, v, mask) -> jax.Array:
    """The exact attention the method `name` approximates (see the module docstring)."""
    if name not in SHARED_QK:
        return dense_attention(q, k, v, mask)
    d = q.shape[-1]
    keys = q * jax.lax.rsqrt(jnp.maximum(jnp.sum(q * q, -1, keepdims=True), 1e-12))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, keys) / math.sqrt(d)
    eye = jnp.eye(q.shape[1], dtype=bool)
    others = jnp.sum(mask, axis=1)[:, None, None, None] > 1
    logits = jnp.where(eye & others, mask_value(jnp.float32), logits)
    logits = jnp.where(mask[:, None, None, :], logits, mask_value(jnp.float32))
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v)


def entropy(q, k, mask) -> float:
    """Mean row entropy (nats) of softmax(q k^T / sqrt(d)) over real queries and heads."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    logp = jax.nn.log_softmax(jnp.where(mask[:, None, None, :], logits, -jnp.inf), -1)
    h = -jnp.sum(jnp.where(mask[:, None, None, :], jnp.exp(logp) * logp, 0.0), -1)
    return float(jnp.sum(h * mask[:, None, :]) / (jnp.sum(mask) * q.shape[2]))


def squared_norms(out, ref, mask) -> tuple[float, float]:
    """(||out - ref||_F^2, ||ref||_F^2) over the real query positions."""
    m = np.asarray(mask)[:, :, None, None]
    ref = np.where(m, np.asarray(ref, np.float64), 0.0)
    diff = np.where(m, np.asarray(out, np.float64), 0.0) - ref
    return float(np.sum(diff * diff)), float(np.sum(ref * ref))


def relative_error(out, ref, mask) -> float:
    num, den = squared_norms(out, ref, mask)
    return math.sqrt(num / den)


def identity_columns(q):
    """One-hot values for reading an attention matrix: for j = 0 .. ceil(L / Dh) - 1, v with
    v[b, t, h, c] = 1 where t = j Dh + c (columns j Dh .. of the L x L identity), so that
    A v is that slice of A. q: [B, L, H, Dh] gives the shape."""
    b, length, h, dh = q.shape
    rows = jnp.arange(length)[:, None]
    for j in range(-(-length // dh)):
        cols = (rows == j * dh + jnp.arange(dh)[None, :]).astype(q.dtype)  # [L, Dh]
        yield jnp.broadcast_to(cols[None, :, None, :], (b, length, h, dh))


def attention_matrix(apply, q, k, mask) -> jax.Array:
    """[B, L, H, L]: the matrix A of the attention `apply(q, k, v, mask) = A v`, read one
    slice of columns at a time through one-hot values."""
    length = q.shape[1]
    cols = [apply(q, k, v, mask) for v in identity_columns(q)]
    return jnp.concatenate(cols, axis=-1)[..., :length]


def method_kwargs(name: str, budget: int, length: int, preset: dict | None = None) -> dict:
    kwargs = dict(preset or {})
    kwargs.update(attention.info(name).budget(budget, length))
    return kwargs


def measure(name: str, cfg: AttentionConfig, kwargs: dict, inputs, seed: int, *,
            of: str = "output") -> list[float]:
    """Relative error of `name` on each (q, k, v, mask) of `inputs`: of its attention
    output (`of="output"`) or of its attention matrix (`of="matrix"`, v unused)."""
    if of not in MEASURES:
        raise LRAError(f"--measure {of!r}: expected one of {', '.join(MEASURES)}")
    layer = attention.get(name)(cfg, rngs=nnx.Rngs(seed), **kwargs)
    core = nnx.jit(lambda layer, q, k, v, mask: layer.core(q, k, v, mask, deterministic=True))
    reference = jax.jit(lambda q, k, v, mask: exact(name, q, k, v, mask))
    errors = []
    for q, k, v, mask in inputs:
        values = [v] if of == "output" else identity_columns(q)
        num = den = 0.0
        for vj in values:
            a, b = squared_norms(core(layer, q, k, vj, mask), reference(q, k, vj, mask), mask)
            num, den = num + a, den + b
        errors.append(math.sqrt(num / den))
    return errors


def random_inputs(length: int, temperatures, *, heads: int = 4, head_dim: int = 32,
                  batch: int = 1, seed: int = 0):
    """(a): the same N(0, 1) q, k, v at each temperature, queries divided by T."""
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    shape = (batch, length, heads, head_dim)
    q, k, v = (jax.random.normal(key, shape) for key in (kq, kk, kv))
    mask = jnp.ones((batch, length), bool)
    return [(q / t, k, v, mask) for t in temperatures]


def clustered_inputs(length: int, temperatures, *, cluster_size: int = 8, delta: float = 0.5,
                     heads: int = 4, head_dim: int = 32, batch: int = 1, seed: int = 0,
                     shared_qk: bool = False):
    """(b): Scatterbrain §3's clustered tokens on the unit sphere, queries equal to keys,
    beta = 1 / T; see the module docstring. Cluster j holds the tokens perm[j s .. (j + 1) s
    - 1], s = cluster_size. `shared_qk`: q = beta sqrt(d) z, for a method whose keys are
    its normalised queries (Reformer), so that its logits are beta z_i.z_j too."""
    if cluster_size < 1 or delta < 0:
        raise LRAError(f"clustered inputs: cluster_size={cluster_size} must be >= 1 and "
                       f"delta={delta} >= 0")
    kc, kr, kp, kv = jax.random.split(jax.random.key(seed), 4)
    shape = (batch, length, heads, head_dim)
    clusters = -(-length // cluster_size)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    centres = unit(jax.random.normal(kc, (batch, clusters, heads, head_dim)))
    z = jnp.repeat(centres, cluster_size, axis=1)[:, :length]
    z = unit(z + delta / math.sqrt(head_dim) * jax.random.normal(kr, shape))
    z = z[:, jax.random.permutation(kp, length)]
    v = jax.random.normal(kv, shape)
    mask = jnp.ones((batch, length), bool)
    scale = head_dim ** 0.25
    if shared_qk:
        scales = [scale * scale / t for t in temperatures]
    else:
        scales = [scale / math.sqrt(t) for t in temperatures]
    return [(x, x, v, mask) for x in (z * c for c in scales)]


def checkpoint_inputs(workdir: str | Path, examples: int):
    """(b): per layer, the (q, k, v, mask) of a trained run's validation examples, its
    AttentionConfig, the run's config and the run's trained method."""
    from lra.data import pipeline
    from lra.experiments.evaluate import restore
    from lra.models import padding_mask

    c, trainer, splits, _ = restore(workdir)
    model = nnx.merge(trainer.graphdef, trainer.state["params"], trainer.rng_state,
                      trainer.state["rest"])
    batch = next(iter(pipeline.eval_batches(splits["val"], examples, 1)))
    ids = jnp.asarray(batch["inputs"])
    tower = model.tower
    x, mask = tower.embed(ids, padding_mask(jnp.asarray(batch["lengths"]), ids.shape[1]))
    layers = []
    for block in tower.encoder.blocks:
        q, k, v = block.attn.project(block.norm1(x))
        layers.append((q, k, v, mask))
        x = block(x, mask, deterministic=True)
    return layers, tower.encoder.blocks[0].attn.cfg, c


def run(methods: list[str], *, length: int = 512, budget: int = 64, temperatures=None,
        checkpoint: str | Path | None = None, examples: int = 2, seed: int = 0,
        inputs: str = "gaussian", of: str = "output", delta: float = 0.5) -> list[Table]:
    """The error tables: synthetic q, k, v (`inputs`) across temperatures, and (with a
    checkpoint) per layer; errors of the attention output or matrix (`of`)."""
    if inputs not in INPUTS:
        raise LRAError(f"--inputs {inputs!r}: expected one of {', '.join(INPUTS)}")
    if of not in MEASURES:
        raise LRAError(f"--measure {of!r}: expected one of {', '.join(MEASURES)}")
    if temperatures is None:
        temperatures = TEMPERATURES if inputs == "gaussian" else CLUSTERED_TEMPERATURES
    temperatures = tuple(temperatures)
    if inputs == "gaussian":
        synthetic = random_inputs(length, temperatures, seed=seed)
        source, name = "random q, k, v", "approx_random"
    else:
        synthetic = clustered_inputs(length, temperatures, delta=delta, seed=seed)
        shared = clustered_inputs(length, temperatures, delta=delta, seed=seed, shared_qk=True)
        source, name = (f"clustered q = k (Scatterbrain §3, Delta={delta:g})",
                        "approx_clustered")
    what = "attention output" if of == "output" else "attention matrix"
    cfg = AttentionConfig(dim=synthetic[0][0].shape[2] * synthetic[0][0].shape[3],
                          num_heads=synthetic[0][0].shape[2], max_len=length)
    entropies = [entropy(q, k, m) for q, k, _, m in synthetic]
    columns = [f"T={t:g}" for t in temperatures]
    tables = [_table(name, f"Relative error of the {what}, {source} (L={length}, budget "
                     f"{budget})", columns, "temperature", temperatures, methods,
                     lambda m: (cfg, method_kwargs(m, budget, length)),
                     lambda m: shared if inputs == "clustered" and m in SHARED_QK else synthetic,
                     seed, of)]
    tables[0].notes.append("Mean row entropy of the exact attention (nats): " + ", ".join(
        f"T={t:g}: {h:.2f}" for t, h in zip(temperatures, entropies, strict=True))
        + f" (uniform: {math.log(length):.2f}).")
    if inputs == "clustered":
        tables[0].notes.append(f"beta = 1 / T; log L = {math.log(length):.2f} (Scatterbrain §3: "
                               "low-rank regime below about log L, sparse well above it); "
                               "clusters of 8 tokens on the unit sphere at random positions; "
                               "Reformer given q = beta sqrt(d) z so that its logits (keys "
                               "normalised) are the same beta z.z.")
    for record in tables[0].records:
        record["entropy"] = round(entropies[temperatures.index(record["temperature"])], 4)
    if checkpoint is not None:
        layers, cfg_b, c = checkpoint_inputs(checkpoint, examples)
        n = layers[0][0].shape[1]

        def setup(name):
            preset = config.load(f"{c.task}:model={name},size={c.size}").model.attention_kwargs
            return cfg_b, method_kwargs(name, budget, n, preset.to_dict())

        table = _table("approx_checkpoint", f"Relative error of the {what} on the layers of "
                       f"{checkpoint} (trained with {c.model.attention}, L={n}, budget {budget})",
                       [f"layer {i}" for i in range(len(layers))], "layer",
                       list(range(len(layers))), methods, setup, layers, seed, of)
        table.notes.append("Mean row entropy of the exact attention (nats): " + ", ".join(
            f"layer {i}: {entropy(q, k, m):.2f}" for i, (q, k, _, m) in enumerate(layers)) + ".")
        tables.append(table)
    return tables


def _table(name, title, columns, key, values, methods, setup, inputs, seed, of) -> Table:
    """`inputs`: the (q, k, v, mask) list, or a function of the method giving it."""
    rows, records, notes = [], [], []
    for method in methods:
        try:
            cfg, kwargs = setup(method)
            data = inputs(method) if callable(inputs) else inputs
            errors = measure(method, cfg, kwargs, data, seed, of=of)
        except Exception as e:  # recorded, like a failed bench run: the other methods go on
            log.warning("approx: %s failed", method, exc_info=not isinstance(e, LRAError))
            first = (str(e).splitlines() or [""])[0]
            notes.append(f"{method}: not measured ({type(e).__name__}: {first})")
            continue
        hyper = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        rows.append([method, hyper or "defaults", *(f"{e:.3g}" for e in errors)])
        records += [{"method": method, key: value, "relative_error": round(e, 6),
                     "hyperparameters": hyper} for value, e in zip(values, errors, strict=True)]
    measured = ("||O_method - O||_F / ||O||_F over real positions and heads, O = exact "
                "softmax attention on the same q, k, v" if of == "output" else
                "||A_method - A||_F / ||A||_F over real query rows and heads, A = exact "
                "row-normalised softmax attention matrix of the same q, k")
    notes.insert(0, measured + " (Reformer: its shared-QK exact attention); hyperparameters "
                 "matched to the budget (each method's `budget`).")
    return Table(name, title, ["Method", "hyperparameters", *columns], rows, records, notes)


ERROR_LABELS = {"output": "relative error ||O' - O||_F / ||O||_F",
                "matrix": "relative error ||A' - A||_F / ||A||_F"}


def write(tables: list[Table], out: str | Path, measure: str = "output") -> list[Path]:
    """Each table as .md and .csv, and a plot of the random-input errors against T."""
    from lra.experiments import plots

    out = Path(out)
    written = []
    for table in tables:
        written.append(write_text(out / f"{table.name}.md", markdown(table)))
        written.append(write_text(out / f"{table.name}.csv", csv_text(table)))
    random_table = tables[0]
    if plots.available() and random_table.records:
        curves: dict[str, dict[float, float]] = {}
        for r in random_table.records:
            curves.setdefault(r["method"], {})[r["temperature"]] = r["relative_error"]
        written.append(plots.errors(curves, random_table.title, out / f"{random_table.name}.png",
                                    ERROR_LABELS[measure]))
    return written


def parse_temperatures(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x)
    except ValueError:
        raise LRAError(f"--temperatures {text!r}: expected numbers like 0.25,1,4") from None
    if not values or min(values) <= 0:
        raise LRAError(f"--temperatures {text!r}: expected positive numbers")
    return values


def main(*, methods: str, length: int, budget: int, temperatures: str | None,
         checkpoint: str | None, examples: int, seed: int, out: str, inputs: str = "gaussian",
         measure: str = "output", delta: float = 0.5) -> tuple[list[Table], list[Path]]:
    """`lra approx`: measure and write; returns the tables and the files written."""
    from lra.experiments.sweep import _names

    if length < 2 or budget < 1 or examples < 1:
        raise LRAError("--length must be >= 2, --budget and --examples >= 1")
    if delta < 0:
        raise LRAError(f"--delta {delta}: expected a number >= 0")
    chosen = [m for m in _names(methods, attention.names(), "method") if m != "softmax"]
    temps = None if temperatures is None else parse_temperatures(temperatures)
    tables = run(chosen, length=length, budget=budget, temperatures=temps,
                 checkpoint=checkpoint, examples=examples, seed=seed, inputs=inputs,
                 of=measure, delta=delta)
    shown = temperatures if temperatures is not None else ",".join(
        f"{t:g}" for t in (TEMPERATURES if inputs == "gaussian" else CLUSTERED_TEMPERATURES))
    command = shlex.join(["lra", "approx", "--methods", methods, "--length", str(length),
                          "--budget", str(budget), "--temperatures", shown,
                          "--inputs", inputs, "--measure", measure]
                         + (["--delta", f"{delta:g}"] if inputs == "clustered" else [])
                         + ["--examples", str(examples), "--seed", str(seed), "--out", str(out)]
                         + (["--checkpoint", str(checkpoint)] if checkpoint else []))
    for table in tables:
        table.notes.append(f"Made by `{command}`.")
    return tables, write(tables, out, measure)
