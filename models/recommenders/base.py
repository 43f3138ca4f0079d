"""What every recommender shares: item inputs (ID, optionally text), the RELAND fusion layer, scoring.

"+f_item" concatenates each item's ID embedding with its text embedding (then projects back
to the model's width, so the backbone is unchanged); RELAND adds :class:`RationaleFusion`
on the user side (Eq. 5).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

class ItemInput(nn.Module):
    """Item representations at the backbone's input: ID embedding, or [ID ; text] projected to ``dim``.

    ``padding`` adds row 0 for padded sequence positions (items are then numbered from 1);
    ``init_std`` overrides the ID embedding's initial spread (0.02 with padding, else 0.1).
    """

    def __init__(self, n_items: int, dim: int, text: torch.Tensor | None = None, padding: bool = False,
                 init_std: float | None = None):
        super().__init__()
        self.offset = int(padding)
        self.ids = nn.Embedding(n_items + self.offset, dim, padding_idx=0 if padding else None)
        nn.init.normal_(self.ids.weight, std=init_std or (0.02 if padding else 0.1))
        self.register_buffer("text", text.float() if text is not None else None)
        self.project = nn.Linear(dim + text.shape[1], dim) if text is not None else None

    def forward(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Rows for ``items`` (numbered as the table is, padding included), or every real item."""
        if items is None:
            items = torch.arange(self.offset, self.ids.num_embeddings, device=self.ids.weight.device)
        ids = self.ids(items)
        if self.project is None:
            return ids
        text = self.text[(items - self.offset).clamp(min=0)]
        mixed = self.project(torch.cat([ids, text], dim=-1))
        return mixed * (items >= self.offset).unsqueeze(-1) if self.offset else mixed  # padding stays zero


class RationaleFusion(nn.Module):
    """Eq. (5): z_u = Linear(TextEncoder(r_u)); [α1, α2] = softmax([e_u·W, z_u·W]); e'_u = α1 e_u + α2 z_u.

    z_u is one vector per user, shared by every training position of a sequence, so the
    fusion can act as a second user-ID embedding and overfit.  Three regularisers stop that
    (all active in training only, none changes the form of Eq. 5): ``input_dropout`` on the
    rationale embedding, ``dropout`` on z_u, and ``gate_bias``, a learnt offset of e_u's
    attention logit that starts the gate towards e_u (α1 = sigmoid(gate_bias) for equal
    logits).  Weight decay on the fusion's parameters is the trainer's (its own parameter group).

    ``residual`` scales the fusion's change by a learnt ``blend`` that starts at 0:
    e'_u = e_u + blend · (Eq. 5 − e_u), so the untrained layer is exactly the backbone (the
    trainer fits it on a frozen +f_item backbone and keeps it only if validation improves).
    """

    def __init__(self, rationales: torch.Tensor, dim: int, dropout: float = 0.0, input_dropout: float = 0.0,
                 gate_bias: float = 0.0, residual: bool = False):
        super().__init__()
        self.register_buffer("rationales", rationales.float())
        self.to_user = nn.Linear(rationales.shape[1], dim)
        self.attention = nn.Linear(dim, 1, bias=False)
        self.gate_bias = nn.Parameter(torch.tensor([gate_bias, 0.0]))
        self.blend = nn.Parameter(torch.zeros(1)) if residual else None
        self.input_dropout, self.dropout = nn.Dropout(input_dropout), nn.Dropout(dropout)

    def project(self, users: torch.Tensor, rationales: torch.Tensor | None = None) -> torch.Tensor:
        """z_u for ``users``: from the training-time table, or from ``rationales`` rows (as when serving)."""
        source = self.rationales[users] if rationales is None else rationales
        return self.dropout(self.to_user(self.input_dropout(source)))

    def mix(self, user_vectors: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused vectors and the attention weights (rows × 2, each row sums to 1)."""
        logits = torch.cat([self.attention(user_vectors), self.attention(z)], dim=1) + self.gate_bias
        weights = torch.softmax(logits, dim=1)
        fused = weights[:, :1] * user_vectors + weights[:, 1:] * z
        if self.blend is not None:
            fused = user_vectors + self.blend * (fused - user_vectors)
        return fused, weights

    def forward(self, users: torch.Tensor, user_vectors: torch.Tensor,
                rationales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(user_vectors, self.project(users, rationales))


class Recommender(nn.Module, ABC):
    """A backbone: user (or sequence) vectors, item vectors, and a loss; fusion is added here, once.

    Batches are dicts of tensors: ``users`` always; ``positives``/``negatives`` for pairwise
    (collaborative filtering) models; ``sequences``/``lengths``/``targets`` for sequential ones.
    """

    family: str  # "cf" (BPR over user-item pairs) or "seq" (cross-entropy over the next item)
    # The backbone's own settings (RecBole's published values): constructor arguments and the
    # trainer's lr / weight_decay.  Configuration and tuning override them; unknown keys are errors.
    defaults: ClassVar[dict[str, float | int]] = {"lr": 1e-3, "weight_decay": 0.0}
    needs_adjacency: ClassVar[bool] = False  # graph backbones propagate over the training interactions

    max_len = 50  # recent items in a serving row (sequential backbones read them; others ignore them)

    def __init__(self, n_users: int, n_items: int, dim: int, rationales: torch.Tensor | None,
                 fusion: dict | None = None):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.fusion = RationaleFusion(rationales, self.user_dim, **(fusion or {})) if rationales is not None else None
        self.text_dim = rationales.shape[1] if rationales is not None else 0

    @property
    def user_dim(self) -> int:
        return self.dim

    @abstractmethod
    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(user vectors for the batch before fusion, vectors of every item)."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""

    def users_and_items(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """User vectors after the RELAND fusion (when the variant has it), and every item's vector."""
        users, items = self.encode(batch)
        return self.fuse(batch["users"], users, batch.get("rationales")), items

    def fuse(self, users: torch.Tensor, vectors: torch.Tensor, rationales: torch.Tensor | None = None) -> torch.Tensor:
        """``vectors`` of ``users`` after the RELAND fusion (unchanged for variants without it)."""
        return vectors if self.fusion is None else self.fusion(users, vectors, rationales)[0]

    def match(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores of every (user, item) pair: a dot product unless the backbone learns the matching."""
        return users @ items.T

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(batch × n_items) scores for full ranking."""
        return self.match(*self.users_and_items(batch))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """Serving entry point (one float matrix, as MLflow's pyfunc passes it): scores of every item.

        Each row is [user index, the ``max_len`` most recent items (numbered from 1, right-padded
        with 0), the user's rationale embedding (RELAND variants)]: see :func:`serving_rows`.
        """
        sequences = rows[:, 1: 1 + self.max_len].long()
        batch = {"users": rows[:, 0].long(), "sequences": sequences,
                 "lengths": (sequences > 0).sum(1).clamp(min=1)}
        if self.fusion is not None:
            batch["rationales"] = rows[:, 1 + self.max_len:]
        return self.score(batch)


def serving_rows(users: torch.Tensor, sequences: torch.Tensor, rationales: torch.Tensor | None) -> torch.Tensor:
    """The float matrix :meth:`Recommender.forward` reads (the registered model's input)."""
    parts = [users[:, None].float(), sequences.float()] + ([rationales.float()] if rationales is not None else [])
    return torch.cat(parts, dim=1)
