"""Approximate bulk retrieval (faiss IVF / HNSW over the pool's seeds): recall checked against exact
retrieval on a fixed sample of users, and a refresh below ``pool.min_recall`` stopped at the gate."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.config import load_config
from components.data.tables import vector_array
from components.features import apply_features, materialise_features, online_features
from components.pool import write_pool_version
from components.retrieval import retrieve_rationales
from components.workspace import Workspace
from validation.gate import ValidationFailed

SEEDS, USERS, DIM = 3_000, 20_000, 16


def config(**pool):
    return load_config(overrides={"pool": {"recall_sample": 4_000, **pool}})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Users and seeds around 40 tastes, as behaviour vectors cluster; a real pool in Milvus Lite."""
    ws = Workspace(tmp_path_factory.mktemp("ann"))
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, DIM))

    def around(n):
        return (centres[rng.integers(0, 40, n)] + 0.35 * rng.normal(size=(n, DIM))).astype(np.float32)

    seeds = pd.DataFrame({"user_idx": np.arange(SEEDS), "user_id": [f"s{i}" for i in range(SEEDS)], "step1": "s",
                          "step2": "t", "model": "m", "template_version": "v", "prompt_tokens": 0,
                          "completion_tokens": 0})
    rationale = rng.normal(size=(SEEDS, 384)).astype(np.float32)
    write_pool_version(ws, str(ws.milvus_file), seeds, around(SEEDS), rationale / np.linalg.norm(rationale, axis=1)[:, None])
    ws.user_vectors.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"user_id": [f"u{i}" for i in range(USERS)], "user_idx": np.arange(USERS),
                             "vector": vector_array(around(USERS)), "cold": np.zeros(USERS, bool),
                             "event_timestamp": pa.array(np.full(USERS, pd.Timestamp.now(tz="UTC").value // 1000),
                                                         pa.timestamp("us", tz="UTC"))}),
                   ws.user_vectors, row_group_size=5_000)
    return ws


def assigned(ws: Workspace) -> np.ndarray:
    return pq.read_table(ws.user_rationales, columns=["seed_user_id"]).column("seed_user_id").to_numpy(False)


@pytest.mark.parametrize("index", ["ivf", "hnsw", "clustered"])
def test_an_approximate_index_agrees_with_exact_retrieval(workspace, index):
    retrieve_rationales(config(), workspace, progress=False)
    exact = assigned(workspace)
    summary = retrieve_rationales(config(index=index), workspace, progress=False)
    assert summary["index"] == index and summary["recall_checked"] > 3_000
    assert summary["recall_at_1"] >= 0.99
    assert (assigned(workspace) == exact).mean() >= 0.99


def test_the_gate_stops_a_refresh_from_a_bad_index_and_the_good_rows_stay_served(workspace):
    good = config(index="ivf")
    retrieve_rationales(good, workspace, progress=False)
    apply_features(good, workspace)
    materialise_features(good, workspace)
    served = online_features(workspace, ["u1", "u2"])["seed_user_id"]
    bad = config(index="ivf", nlist=76, nprobe=1, min_recall=0.999)
    summary = retrieve_rationales(bad, workspace, progress=False)
    assert summary["recall_at_1"] < 0.999
    with pytest.raises(ValidationFailed, match="retrieval_recall"):
        materialise_features(bad, workspace)
    assert online_features(workspace, ["u1", "u2"])["seed_user_id"] == served


@pytest.mark.parametrize("index", ["ivf", "hnsw", "clustered"])
def test_a_pool_versions_index_is_built_once_and_loaded_by_later_retrievals(workspace, index, monkeypatch):
    import faiss

    first = retrieve_rationales(config(index=index), workspace, progress=False)
    chosen = assigned(workspace)
    monkeypatch.setattr(faiss.IndexIVFFlat, "train", lambda *_: pytest.fail("the stored index was trained again"))
    monkeypatch.setattr(faiss.IndexHNSWFlat, "add", lambda *_: pytest.fail("the stored index was built again"))
    monkeypatch.setattr(faiss.Kmeans, "train", lambda *_: pytest.fail("the stored cells were trained again"))
    again = retrieve_rationales(config(index=index), workspace, progress=False)
    assert (assigned(workspace) == chosen).all() and again["recall_at_1"] == first["recall_at_1"]
    assert len(list(workspace.root.glob(f"pool/pool_v1.{index}*.faiss"))) == 1


def test_clustered_search_matches_each_users_cell_neighbourhood_exactly():
    """Each user gets the best of its cell's neighbourhood (the whole pool when it spans every cell),
    top-k best first; a neighbourhood with fewer than k seeds answers -1 (the caller then goes exact)."""
    from components.retrieval import ClusteredSeeds, nearest_cells, nearest_seeds, unit_rows

    rng = np.random.default_rng(3)
    seeds, users = unit_rows(rng.normal(size=(400, 8))).astype(np.float32), unit_rows(rng.normal(size=(300, 8)))
    centroids = unit_rows(seeds[:10].copy())
    whole = ClusteredSeeds(seeds, centroids, probe=10).search(users, 3)
    exact = nearest_seeds(users, seeds, 3)
    np.testing.assert_array_equal(whole[1], exact[0])
    np.testing.assert_allclose(whole[0], exact[1], rtol=1e-5)
    one = ClusteredSeeds(seeds, centroids, probe=1)
    similarity, best = one.search(users, 1)
    own_cell = nearest_cells(users, one.centroids)
    for user in range(0, 300, 37):
        members = one.candidates[own_cell[user]]
        assert best[user, 0] == members[np.argmax(seeds[members] @ users[user])]
    assert (nearest_cells(seeds[best[:, 0]], one.centroids) == own_cell).all(), "probe 1: the user's own cell only"
    tiny = ClusteredSeeds(seeds[:12], centroids, probe=1)
    short = np.array([len(tiny.candidates[c]) < 2 for c in nearest_cells(users, tiny.centroids)])
    assert short.any() and (tiny.search(users, 2)[1][short] == -1).all()
