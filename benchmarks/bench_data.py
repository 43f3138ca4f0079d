"""Generate and prepare synthetic data at growing scale: rows/s and peak memory per scale.

    python benchmarks/bench_data.py [--users 100000 1000000 10000000] [--workdir /tmp/reland-bench]

Each scale runs in a fresh child process, so its peak RSS is its own.  Memory should stay
nearly flat as users grow: the generator writes fixed-size blocks and ``prepare`` streams
chunks, holding only per-user and per-item count arrays (16 bytes a user).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_measured, save  # noqa: E402

CHILD = """
import json, sys, time
from components.config import load_config
from components.data.prepare import prepare_data
from components.workspace import Workspace
users, root = int(sys.argv[1]), sys.argv[2]
config = load_config(overrides={"synthetic": {"users": users}})
t0 = time.perf_counter()
data = prepare_data(config, Workspace(root), progress=False)
print(json.dumps({"rows": data.stats["loaded"]["interactions"], "kept": data.stats["filtered"]["interactions"],
                  "users": data.stats["filtered"]["users"], "prepare_s": time.perf_counter() - t0}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument("--workdir", default="/tmp/reland-bench-data")
    args = parser.parse_args()
    rows = []
    print(f"{'users':>12} {'rows':>13} {'seconds':>9} {'rows/s':>12} {'peak MiB':>9}")
    for users in args.users:
        root = Path(args.workdir) / f"u{users}"
        shutil.rmtree(root, ignore_errors=True)
        m = run_measured(CHILD, str(users), str(root))
        r = m["result"]
        row = {"users": users, "rows": r["rows"], "seconds": round(m["seconds"], 2),
               "rows_per_s": round(r["rows"] / r["prepare_s"]), "peak_rss_mib": round(m["peak_rss_mib"], 1)}
        rows.append(row)
        print(f"{users:>12,} {row['rows']:>13,} {row['seconds']:>9.1f} {row['rows_per_s']:>12,} {row['peak_rss_mib']:>9.0f}")
        shutil.rmtree(root, ignore_errors=True)
    print(f"written to {save('data', {'benchmark': 'generate+prepare', 'runs': rows})}")


if __name__ == "__main__":
    main()
