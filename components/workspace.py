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
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


# Every artefact's place, relative to the workspace root: the one list of the layout (step
# records name their outputs with these, so nothing else spells a file name).
STAGED = "raw"  # the source as loaded (ordinal ids, before the k-core filter)
PREPARED = "data"
ENCODER = "encoder"  # the encoder's checkpoint, vectors and reports
STUDIES = "studies"  # derived workspaces of the studies, one per pool variant
USER_VECTORS = "encoder/user_vectors.parquet"
ITEM_VECTORS = "encoder/item_vectors.parquet"
CHECKPOINT = "encoder/checkpoint.pt"
SEEDS = "pool/seeds.parquet"
RATIONALE_TABLE = "pool/rationales.parquet"
RATIONALE_SUMMARY = "pool/rationales.json"
LLM_CACHE = "pool/llm_cache.sqlite"
PSEUDONYM_KEY = "pool/pseudonym.key"  # the HMAC key of the users' pseudonyms (owner-only)
MILVUS_FILE = "pool/milvus.db"
POOL_POINTER = "pool/current.json"
POOL_VERSIONS = "pool/versions.json"
USER_RATIONALES = "features/user_rationale_embedding.parquet"
SEED_RATIONALES = "features/seed_rationale_embedding.parquet"  # the seed-keyed layout's shared embeddings
ITEM_TEXT = "features/item_text_embedding.parquet"
RETRIEVAL_SUMMARY = "features/retrieval.json"
FEAST_REGISTRY = "features/registry.db"
FEAST_ROOT_MARK = "features/root"  # the root the registry's (absolute) source paths name
MLFLOW_STORE = "mlflow/mlflow.db"
MLFLOW_ROOT_MARK = "mlflow/root"  # the root the MLflow store last ran under (it stores absolute artefact URIs)
MLFLOW_LOCK = "mlflow/.lock"  # held while a process creates, migrates or relocates the store or an experiment
GRAPH_STATS, ENTITIES = "encoder/graph_stats.json", "encoder/entities.parquet"
ENCODER_REPORT, EMBEDDING_REPORT = "encoder/training.json", "encoder/embedding.json"
ITEM_TEXT_CACHE, EMBEDDING_SCRATCH = "encoder/item_text.npy", "encoder/scratch"
SEEDS_SUMMARY = "pool/seeds.json"
RETRIEVAL_SHARDS = "features/shards"
FEATURES = "features"  # the Feast repo path (its sources are relative to it)
VALIDATION = "validation"  # Great Expectations' project and one report per gate
MLFLOW_ARTIFACTS = "mlflow/artifacts"
TUNED, OPTUNA_STORE = "tuning/tuned.yaml", "tuning/optuna.db"
RUN_SUMMARY = "run.json"
RANKERS = "ranker"  # one folder per trained ranker, holding these files:
RANKER_MODEL, RANKER_METRICS, RANKER_PER_USER = "model.pt", "metrics.json", "per_user.npz"
RANKER_BACKBONES = "ranker/backbones"  # trained backbones by the hash of what they were trained on (shared with studies)


class Workspace:
    """Paths of a run's artefacts under one root folder, plus atomic writes into them.

    Each artefact has a property (``workspace.user_vectors`` …) whose parent folder exists.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def stored(self, location: str) -> str:
        """How a record inside the workspace keeps ``location``: relative to the root when it lies
        under it (so a moved or copied workspace reads its own files), unchanged otherwise (a URL)."""
        path = Path(location)
        return str(path.relative_to(self.root)) if path.is_absolute() and path.is_relative_to(self.root) else location

    def located(self, stored: str) -> str:
        """The inverse of :meth:`stored`: a relative path resolved against this workspace's root."""
        return stored if "://" in stored or Path(stored).is_absolute() else str(self.root / stored)

    def file(self, relative: str) -> Path:
        """``root / relative`` with its parent folder created."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def staged(self) -> Path:
        """The staged source's folder: what the interactions gate checks."""
        return self.root / STAGED

    @property
    def prepared(self) -> Path:
        """The prepared dataset's folder (read it with ``PreparedDataset``)."""
        return self.root / PREPARED

    @property
    def user_vectors(self) -> Path:
        return self.file(USER_VECTORS)

    @property
    def item_vectors(self) -> Path:
        return self.file(ITEM_VECTORS)

    @property
    def checkpoint(self) -> Path:
        return self.file(CHECKPOINT)

    @property
    def seeds(self) -> Path:
        return self.file(SEEDS)

    @property
    def rationale_table(self) -> Path:
        return self.file(RATIONALE_TABLE)

    @property
    def rationale_summary(self) -> Path:
        return self.file(RATIONALE_SUMMARY)

    @property
    def llm_cache(self) -> Path:
        return self.file(LLM_CACHE)

    @property
    def pseudonym_key(self) -> Path:
        return self.file(PSEUDONYM_KEY)

    @property
    def milvus_file(self) -> Path:
        return self.file(MILVUS_FILE)

    @property
    def pool_pointer(self) -> Path:
        return self.file(POOL_POINTER)

    @property
    def pool_versions_file(self) -> Path:
        return self.file(POOL_VERSIONS)

    @property
    def user_rationales(self) -> Path:
        return self.file(USER_RATIONALES)

    @property
    def seed_rationales(self) -> Path:
        return self.file(SEED_RATIONALES)

    @property
    def item_text(self) -> Path:
        return self.file(ITEM_TEXT)

    @property
    def retrieval_summary(self) -> Path:
        return self.file(RETRIEVAL_SUMMARY)

    @property
    def feast_registry(self) -> Path:
        return self.file(FEAST_REGISTRY)

    @property
    def studies(self) -> Path:
        """Study tables, layouts and plots (``ranker/``, beside the rankers' folders)."""
        return self.dir(RANKERS)

    def pool_snapshot(self, version: int) -> Path:
        """Seed ids and vectors of pool ``version`` (the bulk retrieval path reads it)."""
        return self.file(f"pool/pool_v{version}.parquet")

    def pool_index(self, version: int, shape: str) -> Path:
        """Pool ``version``'s trained faiss index of ``shape`` (``ivf1095``, ``hnsw32``, ``clustered273``), kept for later retrievals."""
        return self.file(f"pool/pool_v{version}.{shape}.faiss")

    def pool_summary(self, version: int) -> Path:
        return self.file(f"pool/pool_v{version}.json")

    def validation_report(self, gate: str) -> Path:
        return self.file(f"{VALIDATION}/{gate}.json")

    def ranker(self, run_name: str) -> Path:
        """A trained ranker's folder (``RANKER_MODEL``, ``RANKER_METRICS``, ``RANKER_PER_USER``)."""
        return self.root / RANKERS / run_name

    def backbone(self, key: str) -> Path:
        """A trained backbone (state, curve, best row) stored under the hash of its training inputs."""
        return self.file(f"{RANKER_BACKBONES}/{key}.pt")

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
    and removes the partial file or folder; so does a body that writes nothing at the path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if not tmp.exists():
            return
        if tmp.is_dir() and target.is_dir():  # folders cannot be replaced in one step: swap via a side name
            os.replace(target, tmp.parent / "previous")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


@contextlib.contextmanager
def exclusive(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``lock_file`` (created if missing), so that a first-use step two
    processes would otherwise both take (creating a store, an experiment) is taken by one at a time.
    Not re-entrant: a process waits on its own lock if it nests two of these."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json(target: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
