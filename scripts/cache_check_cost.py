"""Time of the data cache's checks on prepared sets: the size check every open does, and the
full sha256 check (first open, `lra data verify`), in seconds and seconds per GB.

    LRA_DATA_DIR=... python scripts/cache_check_cost.py [--repeats 5]

Prints one JSON line per prepared set. Pin it to one core (taskset -c 0) to read it as
"per GB on one core"."""

import argparse
import json
import statistics
import time

from lra.data import store


def timed(path, full: bool, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert store.damage(path, full=full) is None, f"{path} is damaged"
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    for meta in sorted(store.data_dir().glob("*/*/meta.json")):
        path = meta.parent
        size = sum(f.stat().st_size for f in path.glob("*.npy"))
        sizes = timed(path, False, args.repeats)
        full = timed(path, True, args.repeats)
        print(json.dumps({"set": str(path.relative_to(store.data_dir())),
                          "mb": round(size / 1e6, 1),
                          "size_check_ms": round(sizes * 1e3, 3), "checksum_s": round(full, 3),
                          "checksum_s_per_gb": round(full / (size / 1e9), 2)}))


if __name__ == "__main__":
    main()
