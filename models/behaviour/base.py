"""What every behaviour encoder provides, and the graph it was built for."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import ClassVar, Iterator

import dgl
import torch
from torch import nn


@dataclass(frozen=True)
class GraphSignature:
    """Node counts and relations of a graph: a checkpoint only fits a graph with the same signature."""

    nodes: tuple[tuple[str, int], ...]
    relations: tuple[tuple[str, str, str], ...]

    @classmethod
    def of(cls, graph: dgl.DGLHeteroGraph) -> "GraphSignature":
        return cls(tuple((nt, int(graph.num_nodes(nt))) for nt in sorted(graph.ntypes)),
                   tuple(sorted(graph.canonical_etypes)))

    def as_dict(self) -> dict:
        return asdict(self)

    def difference(self, other: "GraphSignature") -> str:
        if self.nodes != other.nodes:
            return f"nodes {dict(self.nodes)} vs {dict(other.nodes)}"
        return f"relations {sorted(set(self.relations) ^ set(other.relations))}"


class BehaviourEncoder(nn.Module, ABC):
    """A module trained with BPR on user→item edges that yields user and item vectors."""

    signature: GraphSignature
    dim: int
    # The configuration fields (``encoder.*``) the constructor takes; anything else is an error.
    settings: ClassVar[tuple[str, ...]]
    reads_item_text: ClassVar[bool] = False  # takes the items' text embeddings (``item_text=``)

    @abstractmethod
    def training_batches(self, graph: dgl.DGLHeteroGraph, batch_size: int, generator: torch.Generator) -> Iterator:
        """One epoch of batches, in a seeded order."""

    @abstractmethod
    def batch_loss(self, graph: dgl.DGLHeteroGraph, batch) -> torch.Tensor:
        """Mean BPR loss of a batch (positive user→item edges against sampled negatives)."""

    @abstractmethod
    def embed(self, graph: dgl.DGLHeteroGraph, batch_size: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Final vectors in batches as (node type, node ids, vectors): items, then users."""
