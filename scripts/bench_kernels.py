"""Speed and memory of the attention kernels against their XLA references (and cuDNN).

    python scripts/bench_kernels.py                       # GPU: 1K-16K
    python scripts/bench_kernels.py --lengths 128,256     # CPU: references only
    python scripts/bench_kernels.py --lengths 128 --interpret   # CPU: the kernels' code path too

For each op and sequence length: forward and forward+backward wall time (median of
--iters runs after one warm-up, each run ended by block_until_ready), the compiled
memory footprint of forward+backward (arguments + outputs + temporaries from XLA's
memory analysis of the compiled program), model TFLOP/s and % of the device's peak.
Implementations: `pallas` (the kernel), `xla` (the op's jnp reference), and for dense
softmax and block_sparse also jax.nn.dot_product_attention with implementation="cudnn" and
"xla" (`jax.nn-xla`; for block_sparse the dense attention masked to the block layout).
On CPU only the XLA implementations run: the Pallas kernels need a GPU or TPU, or
--interpret, which runs them in the Pallas interpreter (a dry run of this script's code
paths, as scripts/gpu_check.py --dry-run does; its timings mean nothing).
Writes <out>/kernels.json and <out>/kernels.md (out: results/<gpu|cpu>), each row first as
`crashed` and then as measured, so that a process that dies leaves its mark; --isolate runs
each op in a process of its own (--append to one file), so that a crash, a poisoned CUDA
context or a hang (--op-timeout) costs that op only.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from lra.kernels.block_sparse import block_sparse_attention
from lra.kernels.flash import flash_attention
from lra.kernels.linear import linear_attention
from lra.kernels.topk import topk_attention

# Dense peak TFLOP/s from NVIDIA's datasheets (the "with sparsity" figures halved):
# (bf16/fp16 tensor core, fp32 non-tensor). Matched against jax's device_kind.
PEAKS = (
    ("H100 PCIe", 756.0, 51.0),
    ("H100 NVL", 835.0, 60.0),
    ("H100", 989.4, 67.0),      # H100 SXM5
    ("H200", 989.4, 67.0),      # H200 SXM
    ("A100", 312.0, 19.5),
)
PEAK_SOURCE = "NVIDIA H100/H200/A100 datasheets, dense (non-sparse) tensor-core figures"
CRASHED = "its process died or was killed while measuring it (see the log)"
TARGETS = ("at 4K fwd+bwd: flash <= 1.3x cuDNN; block_sparse >= 2x faster than its dense-masked "
           "XLA reference (jax.nn-xla); linear >= 2x faster than xla, linear_causal >= 1x")


@dataclasses.dataclass
class Case:
    op: str
    inputs: tuple            # (differentiable arrays...)
    impls: dict[str, Callable]
    fwd_flops: float
    bwd_factor: float        # fwd+bwd FLOPs = bwd_factor * fwd FLOPs


def peak_tflops(kind: str, dtype) -> float | None:
    for name, half, single in PEAKS:
        if name in kind:
            return single if dtype == jnp.float32 else half
    return None


def jax_nn(causal: bool, **kwargs) -> dict[str, Callable]:
    """jax.nn.dot_product_attention with cuDNN (on a GPU) and with XLA."""
    names = ([("cudnn", "cudnn")] if jax.default_backend() == "gpu" else []) + [("jax.nn-xla", "xla")]
    return {name: functools.partial(jax.nn.dot_product_attention, is_causal=causal,
                                    implementation=i, **kwargs) for name, i in names}


def block_masked(attend, q, k, v, *, idx, block: int):
    """Dense attention masked to a block layout: the mask is built inside the program (an
    [L, L] constant would bloat it)."""
    n, length = idx.shape[0], q.shape[1]
    member = jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], idx].set(True)
    mask = jnp.repeat(jnp.repeat(member, block, 0), block, 1)[:length, :length]
    return attend(q, k, v, mask=mask[None, None])


def make_case(op: str, b: int, length: int, h: int, d: int, dtype, on_device: bool,
              interpret: bool = False):
    key = jax.random.key(0)
    ks = jax.random.split(key, 3)
    q, k, v = (jax.random.normal(x, (b, length, h, d), dtype) for x in ks)
    lengths = jnp.full((b,), length, jnp.int32)
    pallas = {"pallas": dict(impl="pallas", interpret=interpret)} if on_device or interpret else {}
    impls = {**pallas, "xla": dict(impl="xla")}
    dense = 4.0 * b * h * length * length * d
    if op in ("flash", "flash_causal"):
        causal = op == "flash_causal"
        fns = {name: functools.partial(flash_attention, lengths=lengths, causal=causal, **i)
               for name, i in impls.items()}
        fns.update(jax_nn(causal, key_value_seq_lengths=lengths))
        return Case(op, (q, k, v), fns, dense / (2 if causal else 1), 3.5)
    if op == "block_sparse":
        block = 64 if length >= 64 else 16
        n = -(-length // block)
        # BigBird-like static layout: 3-block window plus the first block as global.
        rows = [sorted({0, max(i - 1, 0), i, min(i + 1, n - 1)}) for i in range(n)]
        width = max(len(r) for r in rows)
        idx = jnp.array([r + [0] * (width - len(r)) for r in rows], jnp.int32)
        count = jnp.array([len(r) for r in rows], jnp.int32)
        fns = {name: functools.partial(block_sparse_attention, block_idx=idx, block_count=count,
                                       lengths=lengths, block_size=block, **i)
               for name, i in impls.items()}
        for name, fn in jax_nn(False, key_value_seq_lengths=lengths).items():
            fns[name] = functools.partial(block_masked, fn, idx=idx, block=block)
        flops = 4.0 * b * h * float(count.sum()) * block * block * d
        return Case(op, (q, k, v), fns, flops, 3.5)
    if op in ("linear", "linear_causal"):
        causal = op == "linear_causal"
        f = 256                                   # Performer's LRA feature count
        qf, kf = (jax.nn.softplus(jax.random.normal(x, (b, length, h, f), dtype)) for x in ks[:2])
        fns = {name: functools.partial(linear_attention, lengths=lengths, causal=causal, **i)
               for name, i in impls.items()}
        flops = 4.0 * b * h * length * f * (d + 1)
        if causal:
            flops += 2.0 * b * h * length * 64 * (f + d)
        return Case(op, (qf, kf, v), fns, flops, 3.0)
    if op == "topk":
        top_k = 64
        fns = {name: functools.partial(topk_attention, lengths=lengths, top_k=top_k, chunk=1024,
                                       **i)
               for name, i in impls.items()}
        flops = 2.0 * b * h * length * length * d + 4.0 * b * h * length * top_k * d
        return Case(op, (q, k, v), fns, flops, 3.0)
    raise SystemExit(f"unknown op {op!r}")


def timed(fn, args, iters: int) -> tuple[float, int | None]:
    """Median seconds per call of jit(fn) and its compiled memory footprint in bytes."""
    jitted = jax.jit(fn)
    compiled = jitted.lower(*args).compile()
    stats = compiled.memory_analysis()
    memory = None if stats is None else int(
        stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes)
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), memory


def fwd_bwd(fn):
    def run(*args):
        loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32))
        return jax.grad(loss, argnums=tuple(range(len(args))))(*args)
    return run


def measure(case: Case, name: str, iters: int, peak: float | None) -> dict:
    """One implementation's row: times, TFLOP/s and memory, or its failure."""
    row = dict(op=case.op, impl=name, status="ok")
    try:
        fwd_s, fwd_mem = timed(case.impls[name], case.inputs, iters)
        both_s, both_mem = timed(fwd_bwd(case.impls[name]), case.inputs, iters)
    except Exception as err:  # noqa: BLE001 - an OOM or lowering failure is a result
        row.update(status="oom" if "RESOURCE_EXHAUSTED" in str(err) else "failed",
                   error=str(err).splitlines()[0][:300] if str(err) else type(err).__name__)
        return row
    fwd_tf = case.fwd_flops / fwd_s / 1e12
    both_tf = case.bwd_factor * case.fwd_flops / both_s / 1e12
    row.update(fwd_ms=1e3 * fwd_s, fwd_bwd_ms=1e3 * both_s, fwd_tflops=fwd_tf,
               fwd_bwd_tflops=both_tf, fwd_memory_bytes=fwd_mem, fwd_bwd_memory_bytes=both_mem,
               fwd_bwd_pct_peak=None if peak is None else 100 * both_tf / peak)
    return row


def _cell(row: dict, key: str, spec: str) -> str:
    return "" if row.get(key) is None else format(row[key], spec)


def target_lines(results: list[dict]) -> list[str]:
    """The 4K fwd+bwd ratios the targets are about, where both sides were measured."""
    ms = {(r["op"], r["impl"]): r.get("fwd_bwd_ms") for r in results if r["length"] == 4096}
    checks = [("flash", "pallas", "cudnn", "flash / cuDNN time (target <= 1.3)"),
              ("block_sparse", "jax.nn-xla", "pallas",
               "block_sparse dense-masked xla / pallas time (target >= 2)"),
              ("block_sparse", "xla", "pallas", "block_sparse xla / pallas time"),
              ("linear", "xla", "pallas", "linear xla / pallas time (target >= 2)"),
              ("linear_causal", "xla", "pallas", "linear_causal xla / pallas time (target >= 1)")]
    lines = []
    for op, num, den, label in checks:
        a, b = ms.get((op, num)), ms.get((op, den))
        if a and b:
            lines.append(f"- {label}: {a / b:.2f}")
    return lines


def markdown(meta: dict, results: list[dict]) -> str:
    peak = "unknown for this device" if meta["peak_tflops"] is None else \
        f"{meta['peak_tflops']} TFLOP/s"
    lines = [f"# Kernel benchmark ({meta['device_kind']}, {meta['dtype']})", "",
             f"Command: `{meta['command']}`  ", f"jax {meta['jax']}, commit {meta['commit']}, "
             f"B x L = {meta['tokens']} tokens, H = {meta['heads']}, Dh = {meta['head_dim']}  ",
             f"Peak: {peak} (table: {PEAK_SOURCE})  ", f"FLOPs: {meta['flops']}  ",
             f"Targets: {TARGETS}  "]
    if meta["note"]:
        lines.append(f"**{meta['note']}**")
    targets = target_lines(results)
    if targets:
        lines += ["", "## Targets at L = 4096 (fwd+bwd)", "", *targets]
    for op in dict.fromkeys(r["op"] for r in results):
        lines += ["", f"## {op}", "", "| L | B | impl | fwd ms | fwd+bwd ms | fwd+bwd TFLOP/s | "
                  "% peak | fwd+bwd memory MiB | status |", "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in results if r["op"] == op):
            mem = r.get("fwd_bwd_memory_bytes")
            mem = "" if mem is None else f"{mem / 2**20:.1f}"
            lines.append(f"| {r['length']} | {r['batch']} | {r['impl']} | {_cell(r, 'fwd_ms', '.3f')}"
                         f" | {_cell(r, 'fwd_bwd_ms', '.3f')} | {_cell(r, 'fwd_bwd_tflops', '.3g')}"
                         f" | {_cell(r, 'fwd_bwd_pct_peak', '.1f')} | {mem} | {r['status']} |")
    return "\n".join(lines) + "\n"


def command(argv) -> str:
    return shlex.join(["python", "scripts/bench_kernels.py", *(sys.argv[1:] if argv is None else argv)])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default="flash,flash_causal,block_sparse,linear,linear_causal,topk")
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384")
    parser.add_argument("--tokens", type=int, default=16384, help="batch = max(1, tokens / L)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", default=None, help="output folder (default results/<backend>)")
    parser.add_argument("--interpret", action="store_true",
                        help="run the Pallas kernels in the Pallas interpreter (CPU dry run)")
    parser.add_argument("--append", action="store_true",
                        help="add to the rows of <out>/kernels.json instead of starting afresh")
    parser.add_argument("--isolate", action="store_true",
                        help="run each op in a process of its own (a crash stops that op only)")
    parser.add_argument("--op-timeout", type=float, default=None,
                        help="with --isolate: seconds before an op's process is killed")
    parser.add_argument("--command", default=None, help=argparse.SUPPRESS)  # --isolate's, for meta
    args = parser.parse_args(argv)
    if args.isolate:
        return isolated(args, argv, Path(args.out or f"results/{jax.default_backend()}"))

    backend = jax.default_backend()
    on_device = backend in ("gpu", "tpu")
    dtype = jnp.dtype(args.dtype)
    kind = jax.devices()[0].device_kind
    peak = peak_tflops(kind, dtype)
    note = ("Pallas kernels interpreted (--interpret): their timings mean nothing."
            if args.interpret else "" if on_device else
            "CPU: only the XLA implementations ran; Pallas needs a GPU/TPU.")
    meta = dict(device_kind=kind, backend=backend, jax=jax.__version__, dtype=args.dtype,
                tokens=args.tokens, heads=args.heads, head_dim=args.head_dim, peak_tflops=peak,
                peak_source=PEAK_SOURCE, targets=TARGETS, note=note, commit=git_commit(),
                interpret=args.interpret,
                command=args.command or command(argv), flops="model FLOPs; fwd+bwd = 3.5x fwd "
                "for flash and block_sparse (FlashAttention-2 convention), 3x for the others")
    if note:
        print(note)
    out = Path(args.out or f"results/{'gpu' if backend == 'gpu' else backend}")
    results = []
    if args.append and (out / "kernels.json").exists():
        results = json.loads((out / "kernels.json").read_text())["results"]
    for op in args.ops.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            b = max(1, args.tokens // length)
            case = make_case(op, b, length, args.heads, args.head_dim, dtype, on_device,
                             args.interpret)
            for name in case.impls:
                # Written first, so that a process killed by a crash or a hang leaves its mark.
                base = dict(op=op, impl=name, length=length, batch=b)
                write(out, meta, [*results, dict(base, status="crashed", error=CRASHED)])
                row = {**measure(case, name, args.iters, peak), **base}
                results.append(row)
                print(json.dumps(row), flush=True)
    write(out, meta, results)
    print(f"wrote {out / 'kernels.json'} and {out / 'kernels.md'}")
    return 0


def isolated(args, argv, out: Path) -> int:
    """Each op in a process of its own (`--append` to one kernels.json), so that a crash, a
    poisoned GPU context or a hang (--op-timeout) of one op leaves the others measured."""
    for name in ("kernels.json", "kernels.md"):
        (out / name).unlink(missing_ok=True)
    flags = ["--lengths", args.lengths, "--tokens", str(args.tokens), "--heads", str(args.heads),
             "--head-dim", str(args.head_dim), "--dtype", args.dtype, "--iters", str(args.iters),
             "--out", str(out), "--append", "--command", command(argv)]
    flags += ["--interpret"] if args.interpret else []
    failed = 0
    for op in args.ops.split(","):
        # In this process's group: whoever kills the group (scripts/gpu_check.py) kills it too.
        proc = subprocess.Popen([sys.executable, __file__, "--ops", op, *flags])
        try:
            rc = proc.wait(timeout=args.op_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            print(f"{op}: killed after --op-timeout {args.op_timeout} s", flush=True)
        print(f"{op}: exit {rc}", flush=True)
        failed += rc != 0
    return 1 if failed else 0


def write(out: Path, meta: dict, results: list[dict]) -> None:
    """kernels.json and kernels.md under `out`, each replaced atomically."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("kernels.json", json.dumps(dict(meta=meta, results=results), indent=1)),
                       ("kernels.md", markdown(meta, results))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


if __name__ == "__main__":
    sys.exit(main())
