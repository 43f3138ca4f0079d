"""Collaborative-filtering backbones trained with BPR: NeuMF, NGCF and LightGCN (RecBole's designs)."""
from __future__ import annotations

from abc import abstractmethod

import numpy as np
import torch
from torch import nn

from models.losses import bpr_loss
from models.recommenders.base import ItemInput, Recommender


def normalised_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the user–item bipartite graph (users first), as a sparse tensor."""
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float32)
    scale = 1.0 / np.sqrt(np.maximum(degree, 1.0))
    values = scale[rows] * scale[cols]
    size = n_users + n_items
    return torch.sparse_coo_tensor(np.vstack([rows, cols]), values, (size, size)).coalesce().to_sparse_csr()


class PairwiseRecommender(Recommender):
    """BPR over (user, positive, sampled negative) triples."""

    family = "cf"

    def pair_score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (users * items).sum(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, items = self.users_and_items(batch)
        return bpr_loss(self.pair_score(users, items[batch["positives"]]),
                        self.pair_score(users, items[batch["negatives"]]))


class NeuMF(PairwiseRecommender):
    """GMF and an MLP over [user ; item], joined by one prediction layer (He et al., 2017).

    The user vector is [GMF half ; MLP half], so the fusion layer mixes rationales into both.
    """

    defaults = {"lr": 1e-3, "weight_decay": 0.0, "dropout": 0.1, "init_std": 0.1}

    def __init__(self, n_users, n_items, dim, rationales=None, item_text=None, dropout: float = 0.1,
                 init_std: float = 0.1, fusion: dict | None = None):
        super().__init__(n_users, n_items, dim, rationales, fusion)
        self.users = nn.Embedding(n_users, 2 * dim)
        nn.init.normal_(self.users.weight, std=init_std)
        self.items = ItemInput(n_items, 2 * dim, item_text, init_std=init_std)
        self.user_layer, self.item_layer = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim // 2), nn.ReLU())
        self.predict = nn.Linear(dim + dim // 2, 1)

    @property
    def user_dim(self) -> int:
        return 2 * self.dim

    def encode(self, batch):
        return self.users(batch["users"]), self.items()

    def _predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores for broadcastable user and item vector shapes; the MLP's first layer is split per side."""
        d = self.dim
        gmf = users[..., :d] * items[..., :d]
        mlp = self.mlp(self.user_layer(users[..., d:]) + self.item_layer(items[..., d:]))
        return self.predict(torch.cat([gmf.expand(*mlp.shape[:-1], d), mlp], dim=-1)).squeeze(-1)

    def pair_score(self, users, items):
        return self._predict(users, items)

    @torch.no_grad()
    def match(self, users, items, user_block: int = 16, item_block: int = 1024):
        """Every user × item score, for ranking (no gradient, dropout off): the GMF half as one matrix
        product, the MLP tower over (user_block × item_block) tiles written into one reused buffer.
        Cache-sized tiles in place are ~5x faster than a fresh tensor per user: freshly allocated
        multi-megabyte blocks spend most of their time in page faults."""
        d = self.dim
        gmf_weight, mlp_weight = self.predict.weight[0, :d], self.predict.weight[0, d:]
        user_side, item_side = self.user_layer(users[:, d:]), self.item_layer(items[:, d:])
        hidden = self.mlp[2]  # the tower's second layer (ReLU, dropout, *Linear*, ReLU)
        scores = (users[:, :d] * gmf_weight) @ items[:, :d].T + self.predict.bias
        buffer = users.new_empty(user_block * min(item_block, len(items)) * d)
        for i in range(0, len(items), item_block):
            item_tile = item_side[i: i + item_block]
            for u in range(0, len(users), user_block):
                user_tile = user_side[u: u + user_block]
                pairs = buffer[:len(user_tile) * len(item_tile) * d].view(len(user_tile), len(item_tile), d)
                torch.add(user_tile[:, None], item_tile, out=pairs).relu_()
                tower = torch.addmm(hidden.bias, pairs.view(-1, d), hidden.weight.T).relu_() @ mlp_weight
                scores[u: u + len(user_tile), i: i + len(item_tile)] += tower.view(len(user_tile), len(item_tile))
        return scores


class _GraphRecommender(PairwiseRecommender):
    """Shared by NGCF and LightGCN: layer-0 embeddings of users and items, and the normalised adjacency."""

    needs_adjacency = True

    def __init__(self, n_users, n_items, dim, rationales, item_text, adjacency: torch.Tensor, layers: int,
                 fusion: dict | None):
        self.layers = layers
        super().__init__(n_users, n_items, dim, rationales, fusion)
        self.users = nn.Embedding(n_users, dim)
        nn.init.normal_(self.users.weight, std=0.1)
        self.items = ItemInput(n_items, dim, item_text)
        self.register_buffer("adjacency", adjacency, persistent=False)

    @abstractmethod
    def propagate(self, layer0: torch.Tensor) -> torch.Tensor:
        """Final user and item vectors (users first) from the layer-0 embeddings."""

    def encode(self, batch):
        every = self.propagate(torch.cat([self.users.weight, self.items()]))
        return every[batch["users"]], every[self.n_users:]


class LightGCN(_GraphRecommender):
    """Mean of the layer-0 embeddings and their 1..L-hop smoothings, no weights or activations (He et al., 2020)."""

    defaults = {"lr": 1e-3, "weight_decay": 0.0, "layers": 2}

    def __init__(self, n_users, n_items, dim, rationales=None, item_text=None, adjacency=None, layers: int = 2,
                 fusion: dict | None = None):
        super().__init__(n_users, n_items, dim, rationales, item_text, adjacency, layers, fusion)

    def propagate(self, layer0):
        outputs, current = [layer0], layer0
        for _ in range(self.layers):
            current = self.adjacency @ current
            outputs.append(current)
        return torch.stack(outputs).mean(0)


class NGCF(_GraphRecommender):
    """Per layer: LeakyReLU(W1 (L + I) E + W2 (L E ⊙ E)), dropout, L2-normalised; layers concatenated (Wang et al., 2019)."""

    defaults = {"lr": 1e-3, "weight_decay": 0.0, "layers": 3, "dropout": 0.1}

    def __init__(self, n_users, n_items, dim, rationales=None, item_text=None, adjacency=None, layers: int = 3,
                 dropout: float = 0.1, fusion: dict | None = None):
        super().__init__(n_users, n_items, dim, rationales, item_text, adjacency, layers, fusion)
        self.sum_layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.product_layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    @property
    def user_dim(self) -> int:
        return self.dim * (self.layers + 1)

    def propagate(self, layer0):
        outputs, current = [layer0], layer0
        for summed, product in zip(self.sum_layers, self.product_layers):
            neighbours = self.adjacency @ current
            current = nn.functional.leaky_relu(summed(neighbours + current) + product(neighbours * current), 0.2)
            current = nn.functional.normalize(self.dropout(current), dim=1)
            outputs.append(current)
        return torch.cat(outputs, dim=1)
