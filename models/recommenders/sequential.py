"""Sequential backbones trained with cross-entropy over every item: GRU4Rec, SASRec and DuoRec.

Sequences are right-padded with 0 (items are numbered from 1 inside these models) and
capped at the most recent ``max_len`` items; the representation is the output at the last
real position.  The RELAND fusion mixes the rationale into that sequence representation.
Training batches are windows whose every position predicts the next item (``window_targets``).
"""
from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn

from models.recommenders.base import ItemInput, Recommender


class SequentialRecommender(Recommender):
    family = "seq"

    def __init__(self, n_users, n_items, dim, rationales, item_text, max_len: int, dropout: float,
                 fusion: dict | None):
        super().__init__(n_users, n_items, dim, rationales, fusion)
        self.max_len = max_len
        self.items = ItemInput(n_items, dim, item_text, padding=True)
        self.dropout = nn.Dropout(dropout)

    @abstractmethod
    def sequence_outputs(self, sequences: torch.Tensor) -> torch.Tensor:
        """(batch × length × dim) outputs, position t seeing positions ≤ t only."""

    def bucketed_outputs(self, sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """:meth:`sequence_outputs` at every real position, computed in groups of similar length.

        Each group is cut to a power-of-two bound above its lengths.  Position t sees positions
        ≤ t only, so the padding after a sequence never changes its outputs; a batch padded to
        its longest sequence (Amazon Beauty: 47 positions for a mean of 6) would spend most of
        its work there.  Outputs at padded positions are meaningless, as in one padded batch.
        """
        width = sequences.shape[1]
        bounds = torch.clamp(2 ** torch.ceil(torch.log2(lengths.clamp(min=1).double())).long(), max=width)
        outputs = None
        for bound in torch.unique(bounds).tolist():
            rows = torch.nonzero(bounds == bound).squeeze(1)
            group = self.sequence_outputs(sequences[rows, :bound])
            if outputs is None:
                outputs = group.new_zeros(len(sequences), width, group.shape[2])
            outputs[rows, :bound] = group
        return outputs

    def represent(self, sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        outputs = self.bucketed_outputs(sequences, lengths)
        return outputs[torch.arange(len(lengths), device=lengths.device), lengths - 1]

    def encode(self, batch):
        return self.represent(batch["sequences"], batch["lengths"]), self.items()

    def window_outputs(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused vectors and targets of every real position of the windows, and each window's last vector.

        z_u depends on the user only, so it is projected once per window and shared by its positions.
        """
        outputs = self.bucketed_outputs(batch["sequences"], batch["lengths"])
        real = batch["window_targets"] >= 0
        last = outputs[torch.arange(len(outputs)), batch["lengths"] - 1]
        vectors, targets = outputs[real], batch["window_targets"][real]
        if self.fusion is None:
            return vectors, targets, last
        z = self.fusion.project(batch["users"])
        window = torch.arange(len(outputs), device=outputs.device)[:, None].expand(outputs.shape[:2])[real]
        return self.fusion.mix(vectors, z[window])[0], targets, self.fusion.mix(last, z)[0]

    def loss(self, batch):
        vectors, targets, _ = self.window_outputs(batch)
        return nn.functional.cross_entropy(self.match(vectors, self.items()), targets)


class GRU4Rec(SequentialRecommender):
    """Embedding dropout, one GRU layer, a dense projection (Hidasi et al., 2016, RecBole's variant)."""

    defaults = {"lr": 1e-3, "weight_decay": 0.0, "dropout": 0.3}

    def __init__(self, n_users, n_items, dim, rationales=None, item_text=None, max_len: int = 50,
                 dropout: float = 0.3, fusion: dict | None = None):
        super().__init__(n_users, n_items, dim, rationales, item_text, max_len, dropout, fusion)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.dense = nn.Linear(dim, dim)

    def sequence_outputs(self, sequences):
        outputs, _ = self.gru(self.dropout(self.items(sequences)))
        return self.dense(outputs)


class SASRec(SequentialRecommender):
    """Causal self-attention over item + position embeddings (Kang & McAuley, 2018; RecBole defaults)."""

    defaults = {"lr": 1e-3, "weight_decay": 0.0, "dropout": 0.5, "layers": 2, "heads": 2}

    def __init__(self, n_users, n_items, dim, rationales=None, item_text=None, max_len: int = 50,
                 dropout: float = 0.5, layers: int = 2, heads: int = 2, fusion: dict | None = None):
        super().__init__(n_users, n_items, dim, rationales, item_text, max_len, dropout, fusion)
        self.positions = nn.Embedding(max_len, dim)
        nn.init.normal_(self.positions.weight, std=0.02)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(max_len), persistent=False)

    def sequence_outputs(self, sequences):
        length = sequences.shape[1]
        positions = self.positions(torch.arange(length, device=sequences.device))
        hidden = self.dropout(self.norm(self.items(sequences) + positions))
        # Right padding: a real position never attends to the padded ones after it.
        return self.blocks(hidden, mask=self.causal[:length, :length], is_causal=True)


class DuoRec(SASRec):
    """SASRec plus supervised contrastive regularisation (Qiu et al., 2022, RecBole's ``us_x``).

    The positive of a training window is another window with the same last next item
    (``batch["partner"]``), encoded with its own dropout; the other rows of the batch are the
    negatives (InfoNCE over the windows' last representations, dot-product similarity).
    """

    defaults = {**SASRec.defaults, "contrast_weight": 0.1, "temperature": 1.0}

    def __init__(self, *args, contrast_weight: float = 0.1, temperature: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.contrast_weight, self.temperature = contrast_weight, temperature

    def loss(self, batch):
        vectors, targets, last = self.window_outputs(batch)
        loss = nn.functional.cross_entropy(self.match(vectors, self.items()), targets)
        if "partner" not in batch or self.contrast_weight == 0:
            return loss
        _, _, views = self.window_outputs(batch["partner"])
        return loss + self.contrast_weight * info_nce(last, views, batch["targets"], self.temperature)


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over the 2B views of a batch; pairs sharing a target are not used as negatives."""
    views = torch.cat([anchors, positives])
    labels = torch.cat([targets, targets])
    logits = views @ views.T / temperature
    same = labels[:, None] == labels[None, :]
    n = len(anchors)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(views.device)
    logits = logits.masked_fill(same, float("-inf"))
    logits[torch.arange(2 * n), partner] = (views * views[partner]).sum(1) / temperature
    return nn.functional.cross_entropy(logits, partner)
