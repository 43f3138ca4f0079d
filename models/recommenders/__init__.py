"""The paper's six downstream backbones, each with optional item text (+f_item) and RELAND fusion.

* collaborative filtering (BPR, full ranking): :class:`NeuMF`, :class:`NGCF`, :class:`LightGCN`
* sequential (cross-entropy over all items): :class:`GRU4Rec`, :class:`SASRec`, :class:`DuoRec`
"""
from __future__ import annotations

import torch

from models.recommenders.base import ItemInput, RationaleFusion, Recommender, serving_rows
from models.recommenders.cf import NGCF, LightGCN, NeuMF, normalised_adjacency
from models.recommenders.sequential import GRU4Rec, SASRec, DuoRec, info_nce

BACKBONES: dict[str, type[Recommender]] = {"neumf": NeuMF, "ngcf": NGCF, "lightgcn": LightGCN,
                                           "gru4rec": GRU4Rec, "sasrec": SASRec, "duorec": DuoRec}


def family(backbone: str) -> str:
    """"cf" or "seq": which split, batches and loss the backbone trains on."""
    return BACKBONES[backbone].family


def build_recommender(backbone: str, n_users: int, n_items: int, dim: int, item_text: torch.Tensor | None = None,
                      rationales: torch.Tensor | None = None, **hyper) -> Recommender:
    """A backbone; ``item_text`` (items × d) adds "+f_item", ``rationales`` (users × d) the fusion of Eq. 5."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    for name, table, rows in (("item_text", item_text, n_items), ("rationales", rationales, n_users)):
        if table is not None and table.shape[0] != rows:
            raise ValueError(f"{name} has {table.shape[0]:,} rows, expected {rows:,}")
    model = BACKBONES[backbone](n_users, n_items, dim, item_text=item_text, rationales=rationales, **hyper)
    model.max_len = hyper.get("max_len", model.max_len)
    return model


__all__ = ["BACKBONES", "DuoRec", "GRU4Rec", "ItemInput", "LightGCN", "NGCF", "NeuMF",
           "RationaleFusion", "Recommender", "SASRec", "build_recommender", "family", "info_nce",
           "normalised_adjacency", "serving_rows"]
