"""Training losses shared by the behaviour encoders and the recommenders."""
from __future__ import annotations

import torch


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean -log σ(positive − negative) over the pairs."""
    return -torch.nn.functional.logsigmoid(positive - negative).mean()
