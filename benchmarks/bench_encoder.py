"""Behaviour-encoder throughput and memory on synthetic graphs of growing size.

    python benchmarks/bench_encoder.py [--users 100000 1000000] [--kind gat] [--batches 30]

Per scale, three child processes (each with its own peak RSS): prepare the data; train
``--batches`` mini-batches (edges/s); embed every user and item with the real
``embed_users`` step (users/s).  Inference keeps intermediate layers in memory-mapped
files, so its resident memory beyond the ID-embedding tables stays flat as users grow.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_measured, save  # noqa: E402

PREAMBLE = """
import json, sys, time
from components.config import load_config
from components.workspace import Workspace
users, root, kind, batches, edges = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
config = load_config(overrides={"synthetic": {"users": users}, "encoder": {
    "kind": kind, "max_batches": batches, "inference_batch": 16384, "inference_edges": edges}})
workspace = Workspace(root)
"""
PREPARE = PREAMBLE + """
from components.data.prepare import prepare_data
data = prepare_data(config, workspace, progress=False)
print(json.dumps({"rows": data.stats["filtered"]["interactions"]}))
"""
TRAIN = PREAMBLE + """
import torch
from components.behaviour import Optimiser, build_encoder, save_checkpoint, seed_everything, train_epoch
from components.data.tables import PreparedDataset
from components.graph import build_graph, interaction_etypes
t0 = time.perf_counter()
graph, _ = build_graph(PreparedDataset(workspace.prepared), "cf")
graph_s = time.perf_counter() - t0
generator = seed_everything(0)
model = build_encoder(config.encoder, graph, None)
stats = train_epoch(model, graph, Optimiser(model, 0.01), config.encoder, generator)
save_checkpoint(workspace.checkpoint, model, config.encoder, 0, {})
print(json.dumps({"edges": sum(graph.num_edges(et) for et in interaction_etypes(graph)), "graph_s": graph_s, **stats}))
"""
EMBED = PREAMBLE + """
import threading
from components.behaviour import embed_users

def anonymous_mib():  # resident memory that is not file-backed (memory-mapped layer tables excluded)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:")) / 1024

peak, done = [0.0], threading.Event()
def sample():
    while not done.wait(0.02):
        peak[0] = max(peak[0], anonymous_mib())
threading.Thread(target=sample, daemon=True).start()
summary = embed_users(config, workspace, progress=False)
done.set()
print(json.dumps({**summary, "peak_anonymous_mib": round(peak[0])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--kind", choices=["gat", "lightgcn"], default="gat")
    parser.add_argument("--batches", type=int, default=30, help="training mini-batches measured")
    parser.add_argument("--inference-edges", type=int, default=500_000, help="GAT inference edge budget per batch")
    parser.add_argument("--workdir", default="/tmp/reland-bench-encoder")
    args = parser.parse_args()
    runs = []
    print(f"{'users':>10} {'train edges':>12} {'steady edges/s':>14} {'train MiB':>10} {'embed users/s':>14} "
          f"{'embed MiB':>10} {'graph+model':>12} {'anon peak':>10} {'anon working set':>17}")
    for users in args.users:
        root = Path(args.workdir) / f"u{users}"
        shutil.rmtree(root, ignore_errors=True)
        argv = (str(users), str(root), args.kind, str(args.batches), str(args.inference_edges))
        run_measured(PREPARE, *argv)
        train = run_measured(TRAIN, *argv)
        embed = run_measured(EMBED, *argv)
        row = {"users": users, "kind": args.kind, "inference_edges": args.inference_edges, "train_edges": train["result"]["edges"],
               "graph_build_s": round(train["result"]["graph_s"], 1),
               "train_edges_per_s": round(train["result"]["edges_per_s"]),
               "train_setup_s": round(train["result"]["setup_s"], 1),
               "train_steady_edges_per_s": round(train["result"]["steady_edges_per_s"]),
               "train_peak_rss_mib": round(train["peak_rss_mib"]),
               "embed_users_per_s": embed["result"]["users_per_s"], "embed_s": embed["result"]["seconds"],
               "embed_peak_rss_mib": round(embed["peak_rss_mib"]),
               "embed_graph_and_model_mib": embed["result"]["rss_before_inference_mib"],
               "embed_working_set_mib": round(embed["peak_rss_mib"] - embed["result"]["rss_before_inference_mib"]),
               "embed_peak_anonymous_mib": embed["result"]["peak_anonymous_mib"],
               "embed_anonymous_working_set_mib": embed["result"]["peak_anonymous_mib"]
               - embed["result"]["anonymous_before_inference_mib"]}
        runs.append(row)
        print(f"{users:>10,} {row['train_edges']:>12,} {row['train_steady_edges_per_s']:>14,} {row['train_peak_rss_mib']:>10,}"
              f" {row['embed_users_per_s']:>14,} {row['embed_peak_rss_mib']:>10,} {row['embed_graph_and_model_mib']:>12,}"
              f" {row['embed_peak_anonymous_mib']:>10,} {row['embed_anonymous_working_set_mib']:>17,}")
        shutil.rmtree(root, ignore_errors=True)
    name = f"encoder_{args.kind}" + ("" if args.inference_edges == 500_000 else f"_edges{args.inference_edges}")
    print(f"written to {save(name, {'benchmark': 'behaviour encoder', 'runs': runs})}")


if __name__ == "__main__":
    main()
