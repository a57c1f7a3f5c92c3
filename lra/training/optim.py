"""AdamW with the LRA learning-rate schedules and optional gradient clipping."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from lra.errors import LRAError

SCHEDULES = ("rsqrt", "cosine", "linear", "constant")


def schedule(t) -> optax.Schedule:
    """`t` is config.train.

    rsqrt:    lr * min(1, step / warmup) / sqrt(max(step, warmup)), the LRA code's
              "constant * linear_warmup * rsqrt_decay" (peak lr / sqrt(warmup));
    cosine:   linear warmup to lr, then cosine decay to 0 at `steps`;
    linear:   linear warmup to lr, then linear decay to 0 at `steps` (the Nystromformer
              LRA code's schedule);
    constant: linear warmup to lr, then lr.
    """
    warmup = max(int(t.warmup_steps), 0)
    if t.schedule == "rsqrt":
        def rsqrt(step):
            step = jnp.maximum(step, 1).astype(jnp.float32)
            warm = jnp.minimum(1.0, step / max(warmup, 1))
            return t.lr * warm / jnp.sqrt(jnp.maximum(step, warmup))
        return rsqrt
    if t.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, t.lr, warmup, max(t.steps, warmup + 1), 0.0)
    if t.schedule == "linear":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, t.lr, max(warmup, 1)),
             optax.linear_schedule(t.lr, 0.0, max(t.steps - warmup, 1))], [max(warmup, 1)])
    if t.schedule == "constant":
        if not warmup:
            return optax.constant_schedule(t.lr)
        return optax.join_schedules(
            [optax.linear_schedule(0.0, t.lr, warmup), optax.constant_schedule(t.lr)], [warmup])
    raise LRAError(f"train.schedule={t.schedule!r}; valid: {', '.join(SCHEDULES)}")


def optimizer(t) -> optax.GradientTransformation:
    adamw = optax.adamw(schedule(t), b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay)
    if t.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(t.grad_clip), adamw)
    return adamw
