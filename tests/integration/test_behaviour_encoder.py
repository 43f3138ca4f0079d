"""Graph construction, both encoders' training and inference, checkpoints and cold users."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from components.behaviour import embed_users, load_encoder, train_behaviour_encoder
from components.config import load_config
from components.data.prepare import prepare_data
from components.data.tables import TEST, TRAIN, PreparedDataset, vectors_of
from components.graph import build_graph, interaction_etypes
from components.workspace import Workspace

SMALL = {"dim": 16, "heads": 2, "epochs": 2, "batch_size": 256, "patience": 2, "inference_batch": 128}


def small_config(**encoder):
    return load_config(overrides={"synthetic": {"users": 300, "clusters": 4}, "encoder": {**SMALL, **encoder}})


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("enc"))
    prepare_data(small_config(), ws, progress=False)
    return ws


def test_graph_holds_training_edges_only(workspace):
    data = PreparedDataset(workspace.prepared)
    inter = data.interactions()
    graph, entities = build_graph(data, "cf")
    edges = set()
    for et in interaction_etypes(graph):
        u, i = graph.edges(etype=et)
        edges |= set(zip(u.tolist(), i.tolist()))
    train = inter[inter.cf_split == TRAIN]
    test = inter[inter.cf_split == TEST]
    assert edges == set(zip(train.user_idx, train.item_idx))
    assert not edges & set(zip(test.user_idx, test.item_idx)), "a test edge reached the encoder"
    assert graph.num_nodes("user") == data.n_users and graph.num_nodes("item") == data.n_items
    assert {et[1] for et in interaction_etypes(graph)} == {"click", "cart", "purchase"}
    assert {"has_brand", "rev_has_brand", "has_category_1", "rev_click"} <= set(graph.etypes)
    assert set(entities["kind"]) >= {"brand", "category_1", "category_2"}


def test_seq_graph_differs_and_empty_split_is_an_error(workspace):
    data = PreparedDataset(workspace.prepared)
    seq, _ = build_graph(data, "seq", with_entities=False)
    cf, _ = build_graph(data, "cf", with_entities=False)
    assert seq.num_edges() > cf.num_edges() and seq.ntypes == ["item", "user"]
    with pytest.raises(ValueError, match="task must be one of"):
        build_graph(data, "nope")


@pytest.mark.parametrize("kind", ["gat", "lightgcn"])
def test_training_lowers_loss_and_embeddings_are_deterministic(workspace, kind):
    config = small_config(kind=kind, epochs=3, patience=5)
    first = train_behaviour_encoder(config, workspace, progress=False)
    losses = [h["loss"] for h in first["history"]]
    assert losses[-1] < losses[0]
    assert first["validation"]["recall@20"] > 0
    embed_users(config, workspace, progress=False)
    vectors = pd.read_parquet(workspace.user_vectors).drop(columns="event_timestamp")
    again = train_behaviour_encoder(config, workspace, progress=False)
    assert [h["loss"] for h in again["history"]] == losses
    embed_users(config, workspace, progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(workspace.user_vectors)
                                  .drop(columns="event_timestamp"), vectors)
    data = PreparedDataset(workspace.prepared)
    assert vectors["user_idx"].tolist() == list(range(data.n_users))
    assert vectors["user_id"].tolist() == data.users()["user_id"].tolist()
    matrix = vectors_of(pq.read_table(workspace.user_vectors).column("vector"))
    assert matrix.shape == (data.n_users, 16) and matrix.dtype == np.float32 and np.isfinite(matrix).all()


def test_checkpoint_for_another_graph_or_shape_is_refused(workspace, tmp_path):
    config = small_config(epochs=1)
    train_behaviour_encoder(config, workspace, progress=False)
    checkpoint = workspace.checkpoint
    other = Workspace(tmp_path)
    prepare_data(load_config(overrides={"synthetic": {"users": 250, "clusters": 4}}), other, progress=False)
    graph, _ = build_graph(PreparedDataset(other.prepared), "cf")
    with pytest.raises(ValueError, match="different graph"):
        load_encoder(checkpoint, graph, config.encoder)
    graph, _ = build_graph(PreparedDataset(workspace.prepared), "cf")
    with pytest.raises(ValueError, match="encoder.dim=16 but the configuration asks for 32"):
        load_encoder(checkpoint, graph, small_config(dim=32).encoder)


class _RunsCode:
    """A pickled object whose loading would call ``os.system``: what a planted checkpoint carries."""

    def __reduce__(self):
        import os

        return os.system, ("touch planted-checkpoint-ran",)


def test_a_planted_checkpoint_is_refused_without_running_its_code(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    planted = tmp_path / "planted.pt"
    torch.save({"state": {}, "payload": _RunsCode()}, planted)
    graph, _ = build_graph(PreparedDataset(workspace.prepared), "cf")
    with pytest.raises(ValueError, match="planted.pt: not a plain checkpoint .* refused; retrain the encoder"):
        load_encoder(planted, graph, small_config().encoder)
    assert not (tmp_path / "planted-checkpoint-ran").exists()


def test_cold_users_get_a_marked_defined_vector(tmp_path):
    # With k_core=1 and the sequential split, a user with one interaction has no training edge.
    folder = tmp_path / "log"
    folder.mkdir()
    rows = [(f"U{u}", f"I{(u + j) % 12}", 1_600_000_000 + j) for u in range(20) for j in range(6)]
    rows.append(("LONER", "I0", 1_600_000_000))
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(folder / "interactions.csv", index=False)
    pd.DataFrame({"item_id": [f"I{i}" for i in range(12)], "title": "thing"}).to_csv(folder / "items.csv", index=False)
    config = load_config(overrides={"data": {"source": str(folder), "k_core": 1},
                                    "encoder": {**SMALL, "task": "seq", "epochs": 1}})
    ws = Workspace(tmp_path / "ws")
    prepare_data(config, ws, progress=False)
    train_behaviour_encoder(config, ws, progress=False)
    summary = embed_users(config, ws, progress=False)
    vectors = pd.read_parquet(ws.user_vectors)
    assert summary["cold_users"] == 1
    loner = vectors[vectors.user_id == "LONER"].iloc[0]
    assert loner["cold"] and np.isfinite(np.stack(loner["vector"])).all()
    assert not vectors[vectors.user_id != "LONER"]["cold"].any()
