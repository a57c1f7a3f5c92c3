import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("LRA_DATA_DIR", str(ROOT / "runs" / "test-data"))
# One persistent XLA compilation cache for the test session and the processes it starts:
# tests that train the same smoke model (resume, sweeps, CLI) compile it once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / "runs" / "test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
