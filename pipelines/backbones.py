"""Offline backbone training: the unfused rankers of a study, trained where a GPU is, without the platform's services.

    python -m pipelines.backbones WORKSPACE --config STUDY.yaml --backbones sasrec lightgcn
                                  --variants item_text --repeats 3 [--workers 6] [--device cuda]

Trains (or finds already trained) the backbone of each backbone × variant × repeat exactly as
``reland ranker train`` does (``components.ranker.trained_backbone``: same settings, seed and
input hash), one process per ranker, and stores each under ``WORKSPACE/ranker/backbones/``.
Copy those files into the platform's workspace: ``reland ranker train`` (and every study) then
finds them, prints ``reused``, and only evaluates, fits the residual fusion and tracks in MLflow.

Needs torch, pandas, pyarrow, pydantic and the workspace's ``data/`` and
``features/item_text_embedding.parquet`` only (no Feast, DGL or MLflow), so it runs on a bare
GPU box, like the LLM's batch worker (``python -m models.llm.batch``).  The item text is read
from the Feast view's offline source, the same float32 vectors Feast's join returns, so the
stored backbone's key matches the one ``reland`` computes.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from components.config import load_config
from components.data.tables import PreparedDataset, vectors_of
from components.ranker import VARIANT_INPUTS, base_variant, trained_backbone
from components.ranker_data import RankerData
from components.workspace import Workspace
from models.recommenders import family


def item_text(workspace: Workspace) -> torch.Tensor:
    """The item text embeddings in item index order, from the Feast view's offline source."""
    table = pq.read_table(workspace.item_text, columns=["item_idx", "text_embedding"])
    order = np.argsort(table.column("item_idx").to_numpy(), kind="stable")
    return torch.from_numpy(vectors_of(table.column("text_embedding"))[order])


def train_one(root: str, config_file: str | None, backbone: str, variant: str, repeat: int, device: str) -> dict:
    """One backbone (trained, or found); ``main`` runs each in its own process (one CPU thread, the GPU shared)."""
    workspace = Workspace(root)
    config = load_config(file=config_file, overrides={"ranker": {"backbone": backbone, "variant": variant,
                                                                 "repeat": repeat, "device": device}})
    data = RankerData(PreparedDataset(workspace.prepared), family(backbone), config.data.max_seq_len)
    text = item_text(workspace) if VARIANT_INPUTS[base_variant(variant)][0] else None

    def report(row: dict, epoch: int) -> None:
        print(f"{config.ranker.run_name} epoch {epoch}: loss {row['loss']:.4f}, "
              f"valid NDCG@10 {row.get('valid_ndcg@10', float('nan')):.4f}, {row['train_seconds']:.1f}s", flush=True)

    started = time.perf_counter()
    _, curve, best, reused = trained_backbone(config, workspace, data, text, progress=False, on_epoch=report)
    return {"ranker": config.ranker.run_name, "reused": reused, "epochs": len(curve), "best_epoch": best["epoch"],
            "best_valid_ndcg@10": round(best["valid_ndcg@10"], 5), "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--config", default=None, help="the study's YAML (the same file 'reland --config' reads)")
    parser.add_argument("--backbones", nargs="+", required=True)
    parser.add_argument("--variants", nargs="+", default=["item_text"], help="unfused variants: id, item_text")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="rankers trained at once")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    jobs = [(b, v, r) for b in args.backbones for v in args.variants for r in range(args.repeats)]
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = {pool.submit(train_one, str(Path(args.workspace)), args.config, *job, args.device): job
                   for job in jobs}
        for future in as_completed(futures):
            print(json.dumps(future.result()), flush=True)


if __name__ == "__main__":
    main()
