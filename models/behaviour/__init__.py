"""Behaviour encoders: the paper's lightweight encoder (Eq. 1) that embeds every user.

Both encoders answer the same question, "a vector per user and per item", through
:class:`BehaviourEncoder`; the rest of the platform never asks which one it has.
"""
from models.behaviour.base import BehaviourEncoder, GraphSignature
from models.behaviour.gat import HeteroGAT
from models.behaviour.lightgcn import LightGCNEncoder

ENCODERS = {"gat": HeteroGAT, "lightgcn": LightGCNEncoder}

__all__ = ["BehaviourEncoder", "GraphSignature", "HeteroGAT", "LightGCNEncoder", "ENCODERS"]
