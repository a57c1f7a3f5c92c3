#!/usr/bin/env bash
# The one GPU check (issue 18): scripts/gpu_check.py, after installing what the GPU image lacks.
#   bash scripts/gpu_check.sh [--out DIR] [gpu_check.py options]    # on the GPU, about 9 minutes
#   bash scripts/gpu_check.sh --dry-run                             # on CPU, tiny and interpreted
# The run tool's command (carry [".whl"], timeout_s 600; results/gpu/README.md):
#   timeout 580 bash scripts/gpu_check.sh --out /tmp/gpu-check; tar czf $OUT/gpu-check.tgz -C /tmp gpu-check; cp /tmp/gpu-check/parts.json /tmp/gpu-check/summary.md $OUT/
# Missing there: ml-collections (a wheel in $WHEELS, default .whl) and this project, which
# is then put on PYTHONPATH as a folder of links (lra/ with configs/ and kernels/ inside, as
# the package installs them); PYTHONSAFEPATH keeps the source lra/ in the working directory
# from hiding it.
set -uo pipefail
cd "$(dirname "$0")/.."
# The checkout's .venv here (the GPU machine gets none: .venv is not carried), else python3.
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
WHEELS=${WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/gpu-check-site}
# A missing wheel is no reason to stop: the kernel tests and bench_kernels need only jax.
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE/wheels" "$WHEELS"/*.whl \
    || echo "gpu_check: could not install the wheels in $WHEELS: the parts needing ml_collections will fail" >&2
  export PYTHONPATH="$SITE/wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import lra.kernels, lra.configs" 2>/dev/null; then
  rm -rf "$SITE/pkg" && mkdir -p "$SITE/pkg/lra"
  for entry in "$PWD"/lra/* "$PWD/configs" "$PWD/kernels"; do ln -s "$entry" "$SITE/pkg/lra/"; done
  export PYTHONPATH="$SITE/pkg${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1
  "$PY" -c "import lra.kernels" || exit 3
fi
exec "$PY" scripts/gpu_check.py "$@"
