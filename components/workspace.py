"""The workspace: one folder that holds every artefact of a run, so two runs never collide.

Layout (created lazily)::

    raw/          staged input (interactions, items, users) with ordinal ids
    data/         prepared tables: interactions with splits, items, users, stats.json
    graph/        graph statistics          encoder/   checkpoints and embeddings
    pool/         seeds, rationales, LLM cache, Milvus Lite file
    features/     Feast registry and online store    validation/   GX results and data docs
    mlflow/       MLflow SQLite store and artefacts
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


class Workspace:
    """Paths of a run's artefacts under one root folder, plus atomic writes into them."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def dir(self, name: str) -> Path:
        """The sub-folder ``name`` of the workspace, created if missing."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, area: str, filename: str) -> Path:
        return self.dir(area) / filename

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    A crash or an exception leaves ``target`` as it was (absent or the previous version)
    and removes the partial file or folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if tmp.is_dir() and target.is_dir():  # folders cannot be replaced in one step: swap via a side name
            os.replace(target, tmp.parent / "previous")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(target: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
