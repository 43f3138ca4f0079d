"""The unified user–item–entity graph (DGL heterograph) built from one task's training split.

Node types ``user`` / ``item`` / ``entity`` with ids equal to the data layer's indices
(``user_idx``, ``item_idx``; entities numbered in ``entities.parquet``).  Relations:

* ``(user, <behaviour>, item)`` per behaviour type (click, cart, purchase, rating …);
* ``(item, has_<kind>, entity)`` per entity kind the items carry: brand, each category
  level (``category_1`` …), genre, year;
* the reverse of each, named ``rev_<relation>``.

Only training rows of the chosen task reach the graph: validation and test rows would
leak into the behaviour vectors that select rationales for the recommenders downstream.
"""
from __future__ import annotations

from pathlib import Path

import dgl
import numpy as np
import pandas as pd
import torch

from components.data.tables import SPLIT_COLUMN, TRAIN, PreparedDataset
from components.workspace import write_json

MAX_CATEGORY_LEVELS = 4


def reverse(relation: str) -> str:
    return relation[4:] if relation.startswith("rev_") else f"rev_{relation}"


def item_entities(items: pd.DataFrame, category_style: str) -> tuple[pd.DataFrame, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Entity table (entity_idx, kind, value) and, per kind, (item_idx, entity_idx) edge arrays."""
    pairs: list[tuple[int, str, str]] = []
    for item, brand, categories, year in zip(items["item_idx"], items["brand"], items["categories"], items["year"]):
        if isinstance(brand, str) and brand:
            pairs.append((item, "brand", brand))
        cats = list(categories) if categories is not None else []
        if category_style == "path":
            pairs += [(item, f"category_{level + 1}", " > ".join(cats[: level + 1]))
                      for level in range(min(len(cats), MAX_CATEGORY_LEVELS))]
        else:
            pairs += [(item, "genre", c) for c in cats]
        if year is not None and not pd.isna(year):
            pairs.append((item, "year", str(int(year))))
    frame = pd.DataFrame(pairs, columns=["item_idx", "kind", "value"])
    if frame.empty:
        return pd.DataFrame({"entity_idx": pd.Series(dtype=np.int64), "kind": [], "value": []}), {}
    codes, uniques = pd.factorize(pd.MultiIndex.from_frame(frame[["kind", "value"]]))
    entities = pd.DataFrame(list(uniques), columns=["kind", "value"])
    entities.insert(0, "entity_idx", np.arange(len(entities), dtype=np.int64))
    frame["entity_idx"] = codes
    edges = {kind: (g["item_idx"].to_numpy(np.int64), g["entity_idx"].to_numpy(np.int64))
             for kind, g in frame.groupby("kind", sort=True)}
    return entities, edges


def training_edges(data: PreparedDataset, task: str, behaviours: list[str], batch_rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(user_idx, item_idx) arrays of training rows, per behaviour type, read in chunks."""
    column = SPLIT_COLUMN[task]
    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for batch in data.iter_interactions(["user_idx", "item_idx", "behaviour", column], batch_rows):
        train = batch[column] == TRAIN
        for code in np.unique(batch["behaviour"][train]):
            keep = train & (batch["behaviour"] == code)
            parts.setdefault(int(code), []).append((batch["user_idx"][keep], batch["item_idx"][keep]))
    return {behaviours[code]: (np.concatenate([u for u, _ in chunks]), np.concatenate([i for _, i in chunks]))
            for code, chunks in sorted(parts.items())}


def build_graph(data: PreparedDataset, task: str = "cf", batch_rows: int = 1_000_000,
                with_entities: bool = True) -> tuple[dgl.DGLHeteroGraph, pd.DataFrame]:
    """The heterograph over all users and items of ``data`` and the entity table."""
    if task not in SPLIT_COLUMN:
        raise ValueError(f"task must be one of {sorted(SPLIT_COLUMN)}, got {task!r}")
    stats = data.stats
    interactions = training_edges(data, task, stats["behaviours"], batch_rows)
    if not interactions:
        raise ValueError(f"{data.folder}: the {task} training split has no interactions; cannot build a graph")
    relations: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for behaviour, (users, items) in interactions.items():
        u, i = torch.from_numpy(users), torch.from_numpy(items)
        relations[("user", behaviour, "item")] = (u, i)
        relations[("item", reverse(behaviour), "user")] = (i, u)
    items = data.items() if with_entities else data.items().iloc[:0]
    entities, edges = item_entities(items, stats["category_style"])
    for kind, (item_ids, entity_ids) in edges.items():
        i, e = torch.from_numpy(item_ids), torch.from_numpy(entity_ids)
        relations[("item", f"has_{kind}", "entity")] = (i, e)
        relations[("entity", reverse(f"has_{kind}"), "item")] = (e, i)
    sizes = {"user": data.n_users, "item": data.n_items}
    if len(entities):
        sizes["entity"] = len(entities)
    return dgl.heterograph(relations, num_nodes_dict=sizes, idtype=torch.int64), entities


def interaction_etypes(graph: dgl.DGLHeteroGraph) -> list[tuple[str, str, str]]:
    return [et for et in graph.canonical_etypes if et[0] == "user" and et[2] == "item"]


def graph_statistics(graph: dgl.DGLHeteroGraph) -> dict:
    return {"nodes": {nt: int(graph.num_nodes(nt)) for nt in graph.ntypes},
            "edges": {":".join(et): int(graph.num_edges(et)) for et in graph.canonical_etypes}}


def save_graph_statistics(graph: dgl.DGLHeteroGraph, path: Path) -> dict:
    stats = graph_statistics(graph)
    write_json(path, stats)
    return stats
