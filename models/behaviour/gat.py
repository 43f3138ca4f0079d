"""Heterogeneous GAT over users, items and entities (production encoder of the paper, §3.4).

Each layer is a ``HeteroGraphConv`` holding one multi-head ``GATConv`` per relation
(heads concatenated, relations averaged), with a residual connection from each node's
previous representation.  Inputs are learnable ID embeddings, items optionally
augmented with a projection of their MiniLM text embedding.  Training runs on sampled
neighbourhoods (``NeighborSampler`` + ``as_edge_prediction_sampler``) with the batch's
positive edges and their reverses excluded; inference runs layer by layer over full
neighbourhoods in node batches, intermediate layers optionally on disk (bounded memory).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import dgl
import dgl.function as fn
import numpy as np
import torch
import torch.nn.functional as F
from dgl.nn import GATConv, HeteroGraphConv
from torch import nn

from models.behaviour.base import BehaviourEncoder, GraphSignature
from models.losses import bpr_loss

# DGL suggests CPU affinity for worker processes; the loaders here run in the main process.
warnings.filterwarnings("ignore", message="Dataloader CPU affinity opt is not enabled")


def _reverse(relation: str) -> str:
    return relation[4:] if relation.startswith("rev_") else f"rev_{relation}"


def degree_batches(graph: dgl.DGLHeteroGraph, ntype: str, max_nodes: int, max_edges: int) -> Iterator[torch.Tensor]:
    """Consecutive ids of ``ntype`` in batches of at most ``max_nodes`` nodes and about ``max_edges`` in-edges.

    Budgeting edges, not nodes, bounds inference memory on power-law graphs, where a batch
    of popular items can otherwise hold most of the graph's edges.
    """
    degree = sum(graph.in_degrees(etype=et) for et in graph.canonical_etypes if et[2] == ntype)
    cumulative = torch.cumsum(torch.as_tensor(degree), 0)
    total, start = graph.num_nodes(ntype), 0
    while start < total:
        before = int(cumulative[start - 1]) if start else 0
        stop = int(torch.searchsorted(cumulative, before + max_edges, right=True))
        stop = min(max(stop, start + 1), start + max_nodes, total)
        yield torch.arange(start, stop)
        start = stop


def _sampled_in_one_thread(loader) -> Iterator:
    """Batches of ``loader``, each sampled with one OpenMP thread.

    DGL's parallel neighbour sampling draws from per-thread generators, so its result
    depends on thread scheduling; one thread makes training reproducible under a seed.
    The model's own maths keeps every thread (torch and DGL share one OpenMP runtime).
    """
    threads = torch.get_num_threads()
    batches = iter(loader)
    while True:
        dgl.utils.set_num_threads(1)
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            torch.set_num_threads(threads)
        yield batch


class HeteroGAT(BehaviourEncoder):
    settings = ("dim", "layers", "heads", "fanouts", "dropout", "residual", "inference_edges")
    reads_item_text = True

    def __init__(self, graph: dgl.DGLHeteroGraph, dim: int = 64, layers: int = 2, heads: int = 4,
                 fanouts: tuple[int, ...] = (10, 10), dropout: float = 0.1, residual: bool = True,
                 item_text: torch.Tensor | None = None, inference_edges: int = 500_000):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if len(fanouts) != layers:
            raise ValueError(f"one fan-out per layer: got {len(fanouts)} for {layers} layers")
        self.signature, self.dim, self.fanouts, self.residual = GraphSignature.of(graph), dim, list(fanouts), residual
        self.inference_edges = inference_edges
        # Sparse gradients: a step touches only the batch's rows, whatever the number of users.
        self.embeddings = nn.ModuleDict({nt: nn.Embedding(n, dim, sparse=True) for nt, n in self.signature.nodes})
        for table in self.embeddings.values():
            nn.init.normal_(table.weight, std=0.1)
        self.text_projection = nn.Linear(item_text.shape[1], dim) if item_text is not None else None
        self.register_buffer("item_text", item_text if item_text is not None else torch.empty(0), persistent=False)
        relations = sorted({et[1] for et in graph.canonical_etypes})
        self.convs = nn.ModuleList(
            HeteroGraphConv({rel: GATConv((dim, dim), dim // heads, heads, feat_drop=dropout, attn_drop=dropout,
                                          allow_zero_in_degree=True) for rel in relations}, aggregate="mean")
            for _ in range(layers))

    # --- representations ------------------------------------------------------------------
    def input_features(self, ntype: str, ids: torch.Tensor) -> torch.Tensor:
        h = self.embeddings[ntype](ids)
        if ntype == "item" and self.text_projection is not None:
            h = h + self.text_projection(self.item_text[ids])
        return h

    def _layer(self, index: int, block: dgl.DGLHeteroGraph, h_src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h_dst = {nt: h[: block.num_dst_nodes(nt)] for nt, h in h_src.items() if block.num_dst_nodes(nt)}
        out = self.convs[index](block, (h_src, h_dst))
        last = index == len(self.convs) - 1
        result = {}
        for nt, previous in h_dst.items():
            h = out[nt].flatten(1) if nt in out else torch.zeros_like(previous)
            h = h if last else F.elu(h)
            result[nt] = h + previous if self.residual else h
        return result

    def forward(self, blocks: list[dgl.DGLHeteroGraph], input_nodes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = {nt: self.input_features(nt, ids) for nt, ids in input_nodes.items() if len(ids)}
        for index, block in enumerate(blocks):
            h = self._layer(index, block, h)
        return h

    # --- training -------------------------------------------------------------------------
    def training_batches(self, graph, batch_size, generator) -> Iterator:
        seeds = {et: torch.arange(graph.num_edges(et)) for et in graph.canonical_etypes
                 if et[0] == "user" and et[2] == "item"}
        reverse_etypes = {}
        for src, rel, dst in seeds:
            reverse_etypes[(src, rel, dst)] = (dst, _reverse(rel), src)
            reverse_etypes[(dst, _reverse(rel), src)] = (src, rel, dst)
        sampler = dgl.dataloading.as_edge_prediction_sampler(
            dgl.dataloading.NeighborSampler(self.fanouts), exclude="reverse_types", reverse_etypes=reverse_etypes,
            negative_sampler=dgl.dataloading.negative_sampler.Uniform(1))
        dgl.seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return _sampled_in_one_thread(dgl.dataloading.DataLoader(graph, seeds, sampler, batch_size=batch_size,
                                                                 shuffle=True))

    def batch_loss(self, graph, batch) -> torch.Tensor:
        input_nodes, positive, negative, blocks = batch
        h = self(blocks, input_nodes)
        scores = []
        for pair_graph in (positive, negative):
            with pair_graph.local_scope():
                pair_graph.ndata["h"] = {nt: h[nt] for nt in ("user", "item")}
                per_type = []
                for et in pair_graph.canonical_etypes:
                    if et[0] == "user" and et[2] == "item" and pair_graph.num_edges(et):
                        pair_graph.apply_edges(fn.u_dot_v("h", "h", "score"), etype=et)
                        per_type.append(pair_graph.edges[et].data["score"].squeeze(-1))
                scores.append(torch.cat(per_type))
        return bpr_loss(*scores)

    # --- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, graph, batch_size, scratch: Path | None = None) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Layer-wise full-neighbourhood inference in edge-budgeted batches; yields items, then users, in id order."""
        self.eval()
        order = ["item", "user"] + [nt for nt in graph.ntypes if nt not in ("item", "user")]
        h = {nt: self._table(nt, graph.num_nodes(nt), scratch, "input") for nt in order}
        for nt in order:  # input features in batches (they include the item text projection)
            for start in range(0, graph.num_nodes(nt), batch_size):
                ids = torch.arange(start, min(start + batch_size, graph.num_nodes(nt)))
                h[nt][ids] = self.input_features(nt, ids)
        for index in range(len(self.convs)):
            last = index == len(self.convs) - 1
            out = {nt: self._table(nt, graph.num_nodes(nt), scratch, f"layer{index}") for nt in order if not last}
            for nt in order if not last else ["item", "user"]:
                for ids in degree_batches(graph, nt, batch_size, self.inference_edges):
                    block = dgl.to_block(graph.in_subgraph({nt: ids}), dst_nodes={nt: ids})
                    inputs = {t: h[t][block.srcnodes[t].data[dgl.NID]] for t in block.srctypes
                              if block.num_src_nodes(t)}
                    result = self._layer(index, block, inputs)[nt]
                    if last:
                        yield nt, ids, result
                    else:
                        out[nt][ids] = result
            h = out

    def _table(self, ntype: str, rows: int, scratch: Path | None, name: str) -> torch.Tensor:
        """A (rows × dim) float table in memory, or memory-mapped under ``scratch`` to bound RAM."""
        if scratch is None:
            return torch.empty(rows, self.dim)
        scratch.mkdir(parents=True, exist_ok=True)
        array = np.lib.format.open_memmap(scratch / f"{name}-{ntype}.npy", mode="w+", dtype=np.float32,
                                          shape=(rows, self.dim))
        return torch.from_numpy(array)
