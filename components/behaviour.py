"""Steps ``train_behaviour_encoder`` and ``embed_users``: the behaviour matrix M of Eq. (1).

Outputs in ``workspace/encoder``: ``graph_stats.json``, ``entities.parquet``,
``checkpoint.pt`` (best validation recall@20), ``training.json`` (per-epoch curve and the
popularity baseline), ``user_vectors.parquet`` (user_idx, user_id, vector, cold, event_timestamp) and
``item_vectors.parquet`` (item_idx, item_id, vector); ``features/item_text_embedding.parquet`` on request.
"""
from __future__ import annotations

import pickle
import shutil
import time
from pathlib import Path
from typing import TypedDict

import dgl
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from components.config import Config, EncoderConfig
from components.data.tables import SPLIT_COLUMN, TRAIN, VALID, ColumnCursor, PreparedDataset, vector_array, write_table
from components.data.text import describe_item
from components.graph import build_graph, interaction_etypes, save_graph_statistics
from components.training import fit
from components.workspace import (EMBEDDING_REPORT, EMBEDDING_SCRATCH, ENCODER_REPORT, ENTITIES, GRAPH_STATS,
                                  ITEM_TEXT_CACHE, Workspace, atomic_path, write_json)
from models.behaviour import ENCODERS, BehaviourEncoder, GraphSignature
from models.metrics import UserItemSets, full_ranking



def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    dgl.seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


class ValidationSet:
    """Full-ranking evaluation on one task's validation rows, training items excluded."""

    def __init__(self, data: PreparedDataset, task: str, target_split: int = VALID):
        frame = data.interactions(["user_idx", "item_idx", SPLIT_COLUMN[task]])
        split = frame[SPLIT_COLUMN[task]].to_numpy()
        users, items = frame["user_idx"].to_numpy(), frame["item_idx"].to_numpy()
        train, target = split == TRAIN, split == target_split
        self.exclude = UserItemSets(users[train], items[train], data.n_users)
        self.targets = UserItemSets(users[target], items[target], data.n_users)
        self.users = torch.from_numpy(np.unique(users[target]))
        self.popularity = torch.from_numpy(np.bincount(items[train], minlength=data.n_items).astype(np.float32))

    def metrics(self, score) -> dict[str, float]:
        per_user = full_ranking(score, self.users, self.exclude, self.targets, ks=(20,))
        return {name: float(values.mean()) for name, values in per_user.items()}

    def popularity_metrics(self) -> dict[str, float]:
        return self.metrics(lambda users: self.popularity.expand(len(users), -1))

    def model_metrics(self, model: BehaviourEncoder, graph: dgl.DGLHeteroGraph, batch_size: int) -> dict[str, float]:
        tables = {"user": torch.zeros(graph.num_nodes("user"), model.dim), "item": torch.zeros(graph.num_nodes("item"), model.dim)}
        for ntype, ids, vectors in model.embed(graph, batch_size):
            tables[ntype][ids] = vectors
        return self.metrics(lambda users: tables["user"][users] @ tables["item"].T)


def item_text_embeddings(data: PreparedDataset, workspace: Workspace, progress: bool) -> torch.Tensor:
    """MiniLM embeddings of every item's title, brand and categories (cached in the workspace)."""
    from models.text_encoder import TextEncoder

    cache = workspace.file(ITEM_TEXT_CACHE)
    items = data.items()
    if cache.exists() and np.load(cache, mmap_mode="r").shape[0] == len(items):
        return torch.from_numpy(np.load(cache))
    separator = " > " if data.stats["category_style"] == "path" else ", "
    texts = [describe_item(t, b, c, separator) for t, b, c in zip(items["title"], items["brand"], items["categories"])]
    encoder = TextEncoder()
    vectors = np.concatenate([encoder.encode(texts[s: s + 4096])
                              for s in tqdm(range(0, len(texts), 4096), desc="item text", disable=not progress)])
    with atomic_path(cache) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vectors)
    return torch.from_numpy(vectors)


class Optimiser:
    """Adam for dense parameters plus SparseAdam for sparse embedding tables (per-step cost ∝ batch, not users)."""

    def __init__(self, model: torch.nn.Module, lr: float):
        sparse = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse
                  for p in m.parameters()}
        groups = ([p for p in model.parameters() if id(p) in sparse], [p for p in model.parameters() if id(p) not in sparse])
        self.parts = ([torch.optim.SparseAdam(groups[0], lr=lr)] if groups[0] else []) + \
                     ([torch.optim.Adam(groups[1], lr=lr)] if groups[1] else [])

    def zero_grad(self) -> None:
        for part in self.parts:
            part.zero_grad()

    def step(self) -> None:
        for part in self.parts:
            part.step()


class ItemTextSummary(TypedDict):
    items: int
    dim: int


def write_item_text_features(config: Config, workspace: Workspace, progress: bool = True) -> ItemTextSummary:
    """``features/item_text_embedding.parquet``: MiniLM over each item's title, brand and categories."""
    data = PreparedDataset(workspace.prepared)
    vectors = item_text_embeddings(data, workspace, progress).numpy()
    items = data.items()
    now = int(time.time() * 1e6)
    table = pa.Table.from_arrays([pa.array(items["item_id"].astype(str)), pa.array(items["item_idx"].to_numpy()),
                                  vector_array(vectors), pa.array(np.full(len(items), now), pa.timestamp("us", tz="UTC"))],
                                 names=["item_id", "item_idx", "text_embedding", "event_timestamp"])
    with atomic_path(workspace.item_text) as tmp:
        pq.write_table(table, tmp)
    return {"items": len(items), "dim": int(vectors.shape[1])}


def build_encoder(enc: EncoderConfig, graph: dgl.DGLHeteroGraph, item_text: torch.Tensor | None) -> BehaviourEncoder:
    """The configured encoder, given exactly the settings it declares (and the item text if it reads it)."""
    kind = ENCODERS[enc.kind]
    hyper = {name: getattr(enc, name) for name in kind.settings}
    return kind(graph, **hyper, **({"item_text": item_text} if kind.reads_item_text else {}))


def train_epoch(model: BehaviourEncoder, graph: dgl.DGLHeteroGraph, optimiser: Optimiser,
                enc: EncoderConfig, generator: torch.Generator, progress: bool = False) -> dict[str, float]:
    """One pass over the training edges (or ``enc.max_batches`` batches): mean loss and edges/s."""
    model.train()
    total_edges = sum(graph.num_edges(et) for et in interaction_etypes(graph))
    batches = -(-total_edges // enc.batch_size)
    if enc.max_batches:
        batches = min(batches, enc.max_batches)
    losses, started, first_batch_s = [], time.perf_counter(), 0.0
    for index, batch in enumerate(tqdm(model.training_batches(graph, enc.batch_size, generator), total=batches,
                                       desc="train", leave=False, disable=not progress)):
        if index >= batches:
            break
        if index == 0:  # sampler set-up (graph formats, shuffling) is paid once per epoch
            first_batch_s = time.perf_counter() - started
        loss = model.batch_loss(graph, batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    seconds = time.perf_counter() - started
    edges = min(total_edges, batches * enc.batch_size)
    return {"loss": float(np.mean(losses)), "seconds": seconds, "edges_per_s": edges / seconds,
            "setup_s": first_batch_s, "steady_edges_per_s": edges / max(seconds - first_batch_s, 1e-9)}


def save_checkpoint(path: Path, model: BehaviourEncoder, enc: EncoderConfig, epoch: int, metrics: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"state": model.state_dict(), "signature": model.signature.as_dict(), "encoder": enc.model_dump(mode="json"),
                    "epoch": epoch, "metrics": metrics}, tmp)


class EncoderReport(TypedDict):
    """``encoder/training.json``: the encoder's settings, its graph, and the best epoch against popularity."""
    encoder: dict  # the encoder section as trained
    graph: dict  # node and edge counts per type
    best_epoch: int
    validation: dict[str, float]  # recall@20, ndcg@20, hit@20 at the best epoch
    popularity: dict[str, float]  # the same metrics for the popularity baseline
    history: list[dict]  # one row per epoch
    dataset: str


def train_behaviour_encoder(config: Config, workspace: Workspace, progress: bool = True) -> EncoderReport:
    """Train the configured encoder with BPR, early-stopped on validation recall@20."""
    enc = config.encoder
    data = PreparedDataset(workspace.prepared)
    graph, entities = build_graph(data, enc.task, config.data.chunk_rows, with_entities=enc.kind == "gat" and enc.entities)
    graph_stats = save_graph_statistics(graph, workspace.file(GRAPH_STATS))
    write_table(entities, workspace.file(ENTITIES))
    generator = seed_everything(config.seed)
    item_text = item_text_embeddings(data, workspace, progress) if enc.kind == "gat" and enc.item_text else None
    model = build_encoder(enc, graph, item_text)
    optimiser = Optimiser(model, enc.lr)
    validation = ValidationSet(data, enc.task)
    baseline = validation.popularity_metrics()

    def run_epoch(epoch: int, validate: bool) -> dict:
        stats = train_epoch(model, graph, optimiser, enc, generator, progress)
        return {**stats, **(validation.model_metrics(model, graph, enc.inference_batch) if validate else {})}

    history, best = fit(run_epoch, enc.epochs, enc.patience, "recall@20", progress=progress,
                        keep_best=lambda row: save_checkpoint(workspace.checkpoint, model, enc, row["epoch"], row),
                        label=f"{enc.kind} epochs")
    report = {"encoder": enc.model_dump(mode="json"), "graph": graph_stats, "best_epoch": best["epoch"],
              "validation": {k: best[k] for k in ("recall@20", "ndcg@20", "hit@20")},
              "popularity": baseline, "history": history, "dataset": config.name}
    write_json(workspace.file(ENCODER_REPORT), report)
    return report


def load_encoder(path: Path, graph: dgl.DGLHeteroGraph, enc: EncoderConfig,
                 item_text: torch.Tensor | None = None) -> BehaviourEncoder:
    """Rebuild a trained encoder; a checkpoint made for another graph or shape is refused."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint; train one first ('reland encoder train')")
    try:  # tensors and plain values only: a planted checkpoint cannot run code on load
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(f"{path}: not a plain checkpoint (it holds pickled objects, which could run code), "
                         f"refused; retrain the encoder ('reland encoder train'). {str(error).splitlines()[0]}") from None
    signature = GraphSignature(tuple(tuple(n) for n in saved["signature"]["nodes"]),
                               tuple(tuple(r) for r in saved["signature"]["relations"]))
    if signature != GraphSignature.of(graph):
        raise ValueError(f"{path}: checkpoint was trained on a different graph "
                         f"({signature.difference(GraphSignature.of(graph))}); retrain the encoder")
    # Inference settings come from the configuration in force, the architecture from the checkpoint.
    trained = EncoderConfig(**saved["encoder"]).model_copy(
        update={"inference_batch": enc.inference_batch, "inference_edges": enc.inference_edges})
    for field in ("kind", "dim", "layers", "heads"):
        if getattr(trained, field) != getattr(enc, field):
            raise ValueError(f"{path}: checkpoint has encoder.{field}={getattr(trained, field)!r} but the configuration "
                             f"asks for {getattr(enc, field)!r}; retrain or change the configuration")
    model = build_encoder(trained, graph, item_text)
    model.load_state_dict(saved["state"])
    return model


class EmbeddingSummary(TypedDict):
    """``encoder/embedding.json``: what was embedded, how fast, and the memory before inference."""
    users: int
    items: int
    cold_users: int  # users without a training edge (given the popularity-weighted mean item vector)
    dim: int
    seconds: float
    users_per_s: int
    rss_before_inference_mib: int
    anonymous_before_inference_mib: int


def embed_users(config: Config, workspace: Workspace, progress: bool = True) -> EmbeddingSummary:
    """Stream every user's and item's vector to Parquet in batches.

    Users without a training edge are *cold*: their vector is the popularity-weighted mean
    of item vectors (a user who looks like the crowd) and ``cold`` is set, so retrieval
    can apply its own fallback.
    """
    enc = config.encoder
    data = PreparedDataset(workspace.prepared)
    graph, _ = build_graph(data, enc.task, config.data.chunk_rows, with_entities=enc.kind == "gat" and enc.entities)
    item_text = item_text_embeddings(data, workspace, progress) if enc.kind == "gat" and enc.item_text else None
    model = load_encoder(workspace.checkpoint, graph, enc, item_text)
    degree = sum(graph.out_degrees(etype=et) for et in interaction_etypes(graph)).numpy()
    item_ids = data.items()["item_id"].to_numpy()
    user_ids = ColumnCursor(data.folder / "users.parquet", "user_id")
    popularity = np.bincount(np.concatenate([graph.edges(etype=et)[1].numpy() for et in interaction_etypes(graph)]),
                             minlength=graph.num_nodes("item")).astype(np.float64)
    cold_vector = np.zeros(model.dim)
    vector_type = pa.list_(pa.float32(), model.dim)
    item_schema = pa.schema([("item_idx", pa.int64()), ("item_id", pa.string()), ("vector", vector_type)])
    user_schema = pa.schema([("user_idx", pa.int64()), ("user_id", pa.string()), ("vector", vector_type),
                             ("cold", pa.bool_()), ("event_timestamp", pa.timestamp("us", tz="UTC"))])
    now = int(time.time() * 1e6)
    started, next_user = time.perf_counter(), 0
    graph.create_formats_()  # the graph's sparse indexes belong to the graph, not to any one batch
    before = psutil.Process().memory_info()  # graph and parameters loaded: the rest is inference
    with atomic_path(workspace.item_vectors) as items_tmp, atomic_path(workspace.user_vectors) as users_tmp, \
            pq.ParquetWriter(items_tmp, item_schema) as items_out, pq.ParquetWriter(users_tmp, user_schema) as users_out, \
            tqdm(total=graph.num_nodes("user") + graph.num_nodes("item"), desc="embed", unit="node",
                 disable=not progress) as bar:
        for ntype, ids, vectors in model.embed(graph, enc.inference_batch, scratch=workspace.root / EMBEDDING_SCRATCH):
            ids, vectors = ids.numpy(), vectors.numpy().copy()
            if ntype == "item":  # items come first: the cold-user vector is ready before any user
                cold_vector += popularity[ids] @ vectors
                items_out.write_table(pa.Table.from_arrays(
                    [pa.array(ids), pa.array(item_ids[ids]), vector_array(vectors)], schema=item_schema))
            else:
                if ids[0] != next_user or (np.diff(ids) != 1).any():
                    raise RuntimeError("the encoder must yield users in id order")
                next_user = int(ids[-1]) + 1
                cold = degree[ids] == 0
                vectors[cold] = cold_vector / max(popularity.sum(), 1.0)
                users_out.write_table(pa.Table.from_arrays(
                    [pa.array(ids), user_ids.take(len(ids)), vector_array(vectors), pa.array(cold),
                     pa.array(np.full(len(ids), now), pa.timestamp("us", tz="UTC"))], schema=user_schema))
            bar.update(len(ids))
    shutil.rmtree(workspace.root / EMBEDDING_SCRATCH, ignore_errors=True)
    seconds = time.perf_counter() - started
    summary = {"users": int(graph.num_nodes("user")), "items": int(graph.num_nodes("item")),
               "cold_users": int((degree == 0).sum()), "dim": model.dim, "seconds": round(seconds, 3),
               "users_per_s": round(graph.num_nodes("user") / seconds),
               "rss_before_inference_mib": round(before.rss / 2**20),
               "anonymous_before_inference_mib": round((before.rss - before.shared) / 2**20)}
    write_json(workspace.file(EMBEDDING_REPORT), summary)
    return summary
