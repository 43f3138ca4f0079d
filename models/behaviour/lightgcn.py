"""LightGCN (He et al., SIGIR 2020) with DGL message passing: the paper's offline encoder.

Propagation over the user–item training graph with symmetric normalisation
``1/sqrt(deg_u * deg_i)``; the final vector is the mean of the layer outputs.  Every
training step propagates the whole graph (it has no per-node parameters beyond the ID
embeddings), so this encoder suits graphs that fit in memory; use the GAT at scale.
"""
from __future__ import annotations

from typing import Iterator

import dgl
import dgl.function as fn
import torch
from torch import nn

from models.behaviour.base import BehaviourEncoder, GraphSignature
from models.losses import bpr_loss


class LightGCNEncoder(BehaviourEncoder):
    settings = ("dim", "layers")

    def __init__(self, graph: dgl.DGLHeteroGraph, dim: int = 64, layers: int = 3, reg_weight: float = 1e-4):
        super().__init__()
        self.signature, self.dim, self.layers, self.reg_weight = GraphSignature.of(graph), dim, layers, reg_weight
        self.user = nn.Embedding(graph.num_nodes("user"), dim)
        self.item = nn.Embedding(graph.num_nodes("item"), dim)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)
        self._bipartite: dgl.DGLHeteroGraph | None = None

    def bipartite(self, graph: dgl.DGLHeteroGraph) -> dgl.DGLHeteroGraph:
        """All user→item training edges (every behaviour type) with LightGCN's edge weights."""
        if self._bipartite is None:
            pairs = [graph.edges(etype=et) for et in graph.canonical_etypes if et[0] == "user" and et[2] == "item"]
            users, items = torch.cat([u for u, _ in pairs]), torch.cat([i for _, i in pairs])
            g = dgl.heterograph({("user", "ui", "item"): (users, items), ("item", "iu", "user"): (items, users)},
                                num_nodes_dict={"user": graph.num_nodes("user"), "item": graph.num_nodes("item")})
            du = g.out_degrees(etype="ui").clamp(min=1).float()
            di = g.out_degrees(etype="iu").clamp(min=1).float()
            weight = (du[users] * di[items]).rsqrt()
            g.edges["ui"].data["w"] = weight
            g.edges["iu"].data["w"] = weight
            self._bipartite = g
        return self._bipartite

    def propagate(self, graph: dgl.DGLHeteroGraph) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.bipartite(graph)
        hu, hi = self.user.weight, self.item.weight
        users, items = [hu], [hi]
        with g.local_scope():
            for _ in range(self.layers):
                g.nodes["user"].data["h"], g.nodes["item"].data["h"] = hu, hi
                g.multi_update_all({"ui": (fn.u_mul_e("h", "w", "m"), fn.sum("m", "h")),
                                    "iu": (fn.u_mul_e("h", "w", "m"), fn.sum("m", "h"))}, "sum")
                hu, hi = g.nodes["user"].data["h"], g.nodes["item"].data["h"]
                users.append(hu)
                items.append(hi)
        return torch.stack(users).mean(0), torch.stack(items).mean(0)

    def training_batches(self, graph, batch_size, generator) -> Iterator:
        g = self.bipartite(graph)
        users, items = g.edges(etype="ui")
        order = torch.randperm(len(users), generator=generator)
        negatives = torch.randint(0, graph.num_nodes("item"), (len(users),), generator=generator)
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            yield users[rows], items[rows], negatives[rows]

    def batch_loss(self, graph, batch) -> torch.Tensor:
        users, positives, negatives = batch
        hu, hi = self.propagate(graph)
        u = hu[users]
        loss = bpr_loss((u * hi[positives]).sum(-1), (u * hi[negatives]).sum(-1))
        reg = (self.user(users).pow(2).sum() + self.item(positives).pow(2).sum() + self.item(negatives).pow(2).sum())
        return loss + self.reg_weight * reg / len(users)

    @torch.no_grad()
    def embed(self, graph, batch_size, scratch=None) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        hu, hi = self.propagate(graph)
        for ntype, table in (("item", hi), ("user", hu)):
            for start in range(0, len(table), batch_size):
                ids = torch.arange(start, min(start + batch_size, len(table)))
                yield ntype, ids, table[ids]
