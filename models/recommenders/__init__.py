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


TRAINER_SETTINGS = ("lr", "weight_decay")  # in each backbone's ``defaults``, read by the trainer, not the model


def model_settings(backbone: str) -> tuple[str, ...]:
    """The constructor settings a backbone declares (its ``defaults`` less the trainer's)."""
    return tuple(k for k in BACKBONES[backbone].defaults if k not in TRAINER_SETTINGS)


def build_recommender(backbone: str, n_users: int, n_items: int, dim: int, item_text: torch.Tensor | None = None,
                      rationales: torch.Tensor | None = None, fusion: dict | None = None,
                      max_len: int | None = None, adjacency: torch.Tensor | None = None, **hyper) -> Recommender:
    """A backbone; ``item_text`` (items × d) adds "+f_item", ``rationales`` (users × d) the fusion of Eq. 5.

    ``hyper`` holds the backbone's declared settings; a key it does not declare is an error.
    ``max_len`` (sequential) and ``adjacency`` (graph backbones) are passed where they apply.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    unknown = sorted(set(hyper) - set(model_settings(backbone)))
    if unknown:
        raise ValueError(f"{backbone} has no setting {unknown[0]!r}; its settings: {', '.join(model_settings(backbone))}")
    for name, table, rows in (("item_text", item_text, n_items), ("rationales", rationales, n_users)):
        if table is not None and table.shape[0] != rows:
            raise ValueError(f"{name} has {table.shape[0]:,} rows, expected {rows:,}")
    cls = BACKBONES[backbone]
    structural = {"max_len": max_len} if cls.family == "seq" and max_len else {}
    if cls.needs_adjacency:
        structural["adjacency"] = adjacency
    model = cls(n_users, n_items, dim, item_text=item_text, rationales=rationales, fusion=fusion, **structural, **hyper)
    model.max_len = max_len or model.max_len
    return model


__all__ = ["BACKBONES", "TRAINER_SETTINGS", "model_settings", "DuoRec", "GRU4Rec", "ItemInput", "LightGCN", "NGCF", "NeuMF",
           "RationaleFusion", "Recommender", "SASRec", "build_recommender", "family", "info_nce",
           "normalised_adjacency", "serving_rows"]
