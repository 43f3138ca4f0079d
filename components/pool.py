"""Step ``build_pool``: the LLM Reasoning Pool P = {(m_s, r_s)} in Milvus (§3.1.2).

Each pool version is one Milvus collection (``reland_pool_v<N>``) holding, per seed, the
behaviour vector m_s (COSINE index), the embedding of the Step-2 text, both steps' text,
the model, template version, token counts and creation time, loaded once built.  The Milvus
alias ``reland_pool_current`` and ``pool/current.json`` both point at the version in use, so
a rollback is one alias switch (:func:`use_pool_version`), and a user's own Milvus script can
query ``reland_pool_current`` directly.  Size and content are controlled by filters (minimum Step-2
length, vacuous answers that name no catalogue term, ``pool.min_grounding``, near-duplicate
removal; the summary logs the grounding of the parsed and of the kept rationales); rationales come from the response cache, so a refresh
with new seeds asks the LLM only about the new ones.

Milvus Lite (the default, a file in the workspace) allows one process per file: every
function here opens the client, works, and closes it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import Iterator, TypedDict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pymilvus import DataType, MilvusClient

from components.config import Config
from components.data.tables import vector_array, vectors_of
from components.grounding import GroundingSummary, grounding_summary
from components.workspace import Workspace, atomic_path, read_json, write_json

logging.getLogger("pymilvus").setLevel(logging.ERROR)
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # Milvus Lite logs unimplemented optional RPCs
TEXT_LIMIT = 2048
INSERT_BATCH = 1000
CURRENT_ALIAS = "reland_pool_current"  # the Milvus alias of the version in use


@dataclass(frozen=True)
class PoolVersion:
    version: int
    collection: str
    uri: str
    size: int
    behaviour_dim: int
    rationale_dim: int
    created_at: str
    snapshot: str  # Parquet copy of the seed ids and vectors, for the bulk retrieval path
    db_name: str = ""  # a Milvus server's database ("" = the default one)
    token_env: str = "MILVUS_TOKEN"  # environment variable holding a server's token (never stored)


def pool_uri(config: Config, workspace: Workspace) -> str:
    return config.pool.uri or str(workspace.milvus_file)


@contextlib.contextmanager
def milvus(pool: PoolVersion) -> Iterator[MilvusClient]:
    client = MilvusClient(uri=pool.uri, db_name=pool.db_name, token=os.environ.get(pool.token_env, ""))
    try:
        yield client
    finally:
        client.close()


# A PoolVersion as ``pool/versions.json`` stores it (its paths relative to the workspace).
PoolRecord = TypedDict("PoolRecord", {field.name: field.type for field in fields(PoolVersion)})


class PoolSummary(PoolRecord):
    """``build_pool``'s result: the new version, and why each rationale left out was left out."""
    rationales: int
    failed: int
    too_short: int
    vacuous: int
    below_min_grounding: int
    near_duplicates: int
    parsed: GroundingSummary  # of every parsed rationale
    kept: GroundingSummary  # of the pooled ones


def _record(workspace: Workspace, pool: PoolVersion) -> PoolRecord:
    """A pool version as the workspace stores it: its Milvus file and snapshot relative to the root."""
    return {**asdict(pool), "uri": workspace.stored(pool.uri), "snapshot": workspace.stored(pool.snapshot)}


def _version(workspace: Workspace, record: dict) -> PoolVersion:
    return PoolVersion(**{**record, "uri": workspace.located(record["uri"]),
                          "snapshot": workspace.located(record["snapshot"])})


def current_pool(workspace: Workspace) -> PoolVersion:
    pointer = workspace.pool_pointer
    if not pointer.exists():
        raise FileNotFoundError(f"{pointer}: no reasoning pool yet; run 'reland pool build'")
    return _version(workspace, read_json(pointer))


def pool_versions(workspace: Workspace) -> list[PoolVersion]:
    path = workspace.pool_versions_file
    return [_version(workspace, v) for v in read_json(path)] if path.exists() else []


def use_pool_version(workspace: Workspace, version: int) -> PoolVersion:
    """Point the platform (the alias and ``pool/current.json``) at an earlier or later pool version: a rollback."""
    match = [v for v in pool_versions(workspace) if v.version == version]
    if not match:
        raise ValueError(f"pool version {version} not found; known: {[v.version for v in pool_versions(workspace)]}")
    with milvus(match[0]) as client:
        if not client.has_collection(match[0].collection):
            raise ValueError(f"collection {match[0].collection} is gone from {match[0].uri}")
        client.load_collection(match[0].collection)
        point_alias(client, match[0].collection)
    write_json(workspace.pool_pointer, _record(workspace, match[0]))
    return match[0]


def point_alias(client: MilvusClient, collection: str) -> None:
    """Move (or create) the ``reland_pool_current`` alias to ``collection`` in one Milvus call."""
    if CURRENT_ALIAS in client.list_aliases().get("aliases", []):
        client.alter_alias(collection, CURRENT_ALIAS)
    else:
        client.create_alias(collection, CURRENT_ALIAS)


def behaviour_vectors_of(workspace: Workspace, users: np.ndarray) -> np.ndarray:
    """Rows of M for the given ``users`` (user_idx), in their order, read from the streamed vector table."""
    wanted = pd.Index(users)
    out = None
    for batch in pq.ParquetFile(workspace.user_vectors).iter_batches(
            batch_size=65_536, columns=["user_idx", "vector"]):
        hits = wanted.get_indexer(batch.column("user_idx").to_numpy())
        found = hits >= 0
        if found.any():
            vectors = vectors_of(batch.column("vector"))
            out = np.zeros((len(users), vectors.shape[1]), np.float32) if out is None else out
            out[hits[found]] = vectors[found]
    return out


def near_duplicates(embeddings: np.ndarray, threshold: float, block: int = 4096) -> np.ndarray:
    """Mask of rows whose cosine similarity to an earlier row exceeds ``threshold``."""
    duplicate = np.zeros(len(embeddings), bool)
    if threshold >= 1.0:
        return duplicate
    for start in range(0, len(embeddings), block):
        sims = embeddings[start: start + block] @ embeddings[:start + block].T
        rows = np.arange(len(sims))
        sims[:, start:][rows[:, None] <= rows[None, :]] = -1.0  # only earlier rows count
        duplicate[start: start + len(sims)] = (sims > threshold).any(1)
    return duplicate


def _schema(behaviour_dim: int, rationale_dim: int):
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("seed_idx", DataType.INT64, is_primary=True)
    schema.add_field("seed_user_id", DataType.VARCHAR, max_length=256)
    schema.add_field("behaviour", DataType.FLOAT_VECTOR, dim=behaviour_dim)
    schema.add_field("rationale", DataType.FLOAT_VECTOR, dim=rationale_dim)
    for name in ("step1", "step2"):
        schema.add_field(name, DataType.VARCHAR, max_length=TEXT_LIMIT * 4)
    for name in ("model", "template_version"):
        schema.add_field(name, DataType.VARCHAR, max_length=256)
    for name in ("prompt_tokens", "completion_tokens", "created_at"):
        schema.add_field(name, DataType.INT64)
    return schema


def build_pool(config: Config, workspace: Workspace, progress: bool = True) -> PoolSummary:
    """Filter the seed rationales, embed their Step-2 text, and write a new pool version to Milvus."""
    from models.text_encoder import TextEncoder

    cfg = config.pool
    rationales = pd.read_parquet(workspace.rationale_table)
    parsed = rationales[rationales["status"] == "ok"].reset_index(drop=True)
    short = parsed["step2"].str.split().str.len() < cfg.min_words
    vacuous = parsed["vacuous"] & ~cfg.keep_vacuous
    weak = parsed["grounding"] < cfg.min_grounding
    ok = parsed[~(short | vacuous | weak)].reset_index(drop=True)
    if ok.empty:
        raise ValueError(f"{workspace.rationale_table}: no usable rationale for the pool "
                         f"({int((rationales['status'] != 'ok').sum())} failed, {int(short.sum())} too short, "
                         f"{int(vacuous.sum())} vacuous, {int(weak.sum())} below pool.min_grounding)")
    embeddings = TextEncoder(config.pool.text_encoder_path).encode(ok["step2"].tolist())
    duplicate = near_duplicates(embeddings, cfg.dedupe_threshold)
    ok, embeddings = ok[~duplicate].reset_index(drop=True), embeddings[~duplicate]
    behaviour = behaviour_vectors_of(workspace, ok["user_idx"].to_numpy())
    pool = write_pool_version(workspace, pool_uri(config, workspace), ok, behaviour, embeddings,
                              db_name=cfg.db_name, token_env=cfg.token_env)
    summary = {**_record(workspace, pool), "rationales": len(rationales), "failed": int((rationales["status"] != "ok").sum()),
               "too_short": int(short.sum()), "vacuous": int(vacuous.sum()), "below_min_grounding": int(weak.sum()),
               "near_duplicates": int(duplicate.sum()), "parsed": grounding_summary(parsed),
               "kept": grounding_summary(ok)}
    write_json(workspace.pool_summary(pool.version), summary)
    return summary


def write_pool_version(workspace: Workspace, uri: str, seeds: pd.DataFrame, behaviour: np.ndarray,
                       rationale: np.ndarray, db_name: str = "", token_env: str = "MILVUS_TOKEN") -> PoolVersion:
    """Insert seeds (rows of ``rationales.parquet``) with their vectors as the next pool version, and point to it."""
    previous = pool_versions(workspace)
    version = max((v.version for v in previous), default=0) + 1
    snapshot = workspace.pool_snapshot(version)
    pool = PoolVersion(version, f"reland_pool_v{version}", uri, len(seeds), behaviour.shape[1], rationale.shape[1],
                       pd.Timestamp.now(tz="UTC").isoformat(), str(snapshot), db_name, token_env)
    now = int(time.time())
    with milvus(pool) as client:
        if client.has_collection(pool.collection):
            client.drop_collection(pool.collection)
        index = client.prepare_index_params()
        index.add_index(field_name="behaviour", index_type="FLAT", metric_type="COSINE")
        index.add_index(field_name="rationale", index_type="FLAT", metric_type="COSINE")
        client.create_collection(pool.collection, schema=_schema(pool.behaviour_dim, pool.rationale_dim),
                                 index_params=index)
        for start in range(0, len(seeds), INSERT_BATCH):
            chunk = seeds.iloc[start: start + INSERT_BATCH]
            client.insert(pool.collection, [
                {"seed_idx": int(r.user_idx), "seed_user_id": str(r.user_id),
                 "behaviour": behaviour[start + i].tolist(), "rationale": rationale[start + i].tolist(),
                 "step1": r.step1[:TEXT_LIMIT], "step2": r.step2[:TEXT_LIMIT], "model": r.model,
                 "template_version": r.template_version, "prompt_tokens": int(r.prompt_tokens),
                 "completion_tokens": int(r.completion_tokens), "created_at": now}
                for i, r in enumerate(chunk.itertuples())])
        client.load_collection(pool.collection)
        point_alias(client, pool.collection)
    with atomic_path(snapshot) as tmp:
        pq.write_table(pa.Table.from_arrays([
            pa.array(seeds["user_idx"].to_numpy(np.int64)), pa.array(seeds["user_id"].astype(str).to_numpy()),
            vector_array(behaviour), vector_array(rationale), pa.array(seeds["step1"].astype(str).to_numpy())],
            names=["seed_idx", "seed_user_id", "behaviour", "rationale", "step1"]), tmp)
    write_json(workspace.pool_versions_file, [_record(workspace, v) for v in [*previous, pool]])
    write_json(workspace.pool_pointer, _record(workspace, pool))
    return pool


def seed_ids(pool: PoolVersion) -> list[str]:
    """The pool version's seed user ids, in pool order (one column of its snapshot)."""
    return [str(s) for s in pq.read_table(pool.snapshot, columns=["seed_user_id"]).column("seed_user_id").to_pylist()]


def load_pool(pool: PoolVersion) -> dict[str, np.ndarray]:
    """All of a pool version's seeds (ids, behaviour vectors, rationale embeddings), from its snapshot.

    The snapshot is written with the Milvus collection; reading it costs no round trips, and
    the bulk path's results equal Milvus search's (tested).
    """
    table = pq.read_table(pool.snapshot)
    return {"seed_idx": table.column("seed_idx").to_numpy(),
            "seed_user_id": np.asarray(table.column("seed_user_id").to_pylist(), object),
            "behaviour": vectors_of(table.column("behaviour")), "rationale": vectors_of(table.column("rationale"))}


def search_pool(pool: PoolVersion, vectors: np.ndarray, limit: int = 1) -> list[list[dict]]:
    """Online path of Eq. (3): Milvus COSINE search of the pool's behaviour vectors."""
    with milvus(pool) as client:
        client.load_collection(pool.collection)
        hits = client.search(pool.collection, data=np.asarray(vectors, np.float32).tolist(), anns_field="behaviour",
                             limit=limit, output_fields=["seed_user_id", "step1", "step2"],
                             search_params={"metric_type": "COSINE"})
    return [[{"seed_idx": h["seed_idx"], "similarity": h["distance"], **h["entity"]} for h in row] for row in hits]
