"""The ranking service: Feast features, the registered model, explanations, cold start, request validation."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from components.data.prepare import prepare_data
from components.data.tables import PreparedDataset
from pipelines.studies import table2
from components.features import apply_features, materialise_features
from components.workspace import Workspace
from serving import create_app
from builders import make_pool, ranker_config as config, write_features


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("serving"))
    prepare_data(config(), ws, progress=False)
    make_pool(ws)
    write_features(ws, pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1), seed_ids=["seed0", "seed1", "seed2"])
    apply_features(config(), ws)
    materialise_features(config(), ws)
    table2(config(), ws, backbones=("sasrec",), variants=("reland",), progress=False)
    with TestClient(create_app(ws, config())) as client:
        yield client, PreparedDataset(ws.prepared)


def test_ready_and_rank_with_explanation(service):
    client, data = service
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"] == "models:/reland-ranker-synthetic@champion"
    assert (ready["model_name"], ready["model_version"], ready["model_alias"]) == ("reland-ranker-synthetic", "1", "champion")
    user = str(data.users()["user_id"].iloc[0])
    candidates = data.items()["item_id"].astype(str).tolist()[:100]
    answer = client.post("/rank", json={"user_id": user, "candidates": candidates + ["no-such-item"], "k": 5}).json()
    scores = [item["score"] for item in answer["items"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    assert {item["item_id"] for item in answer["items"]} <= set(candidates)
    assert not answer["cold_start"] and answer["explanation"] == "s" and answer["seed_user_id"].startswith("seed")
    assert answer["pool_version"] == 1 and answer["unknown_items"] == ["no-such-item"]
    assert (answer["model_version"], answer["model_alias"]) == ("1", "champion")
    written = pd.Timestamp(answer["feature_timestamp"])
    assert abs((pd.Timestamp.now(tz="UTC") - written).total_seconds() - 3600) < 120  # written an hour ago
    assert 3000 < answer["feature_age_s"] < 4000


def test_a_model_without_rationale_fusion_gives_no_explanation(service):
    import mlflow

    from components.ranker import load_ranker, train_ranker

    client, data = service
    ws = client.app.state.workspace
    train_ranker(config(backbone="sasrec", variant="item_text"), ws, progress=False)
    with mlflow.start_run(run_name="item_text, unregistered"):
        uri = mlflow.pytorch.log_model(load_ranker(config(backbone="sasrec", variant="item_text"), ws), name="model",
                                       serialization_format="pickle", pip_requirements=["torch==2.2.1"]).model_uri
    with TestClient(create_app(ws, config(), model_uri=uri)) as plain:
        ready = plain.get("/ready").json()
        assert ready["model"] == uri and ready["model_version"] is None
        user = str(data.users()["user_id"].iloc[0])
        answer = plain.post("/rank", json={"user_id": user, "candidates": data.items()["item_id"].astype(str).tolist()[:20]})
        assert answer.status_code == 200 and not answer.json()["cold_start"]
        assert answer.json()["explanation"] is None, "a model that ignores rationales explains nothing"


def test_a_process_that_opened_one_workspace_serves_a_copy_from_the_copys_store(service, tmp_path):
    import shutil

    client, _ = service  # this process has pointed MLflow at the original workspace already
    copy = Workspace(tmp_path / "copy")
    shutil.copytree(client.app.state.workspace.root, copy.root, symlinks=True)
    with TestClient(create_app(copy, config())) as served:
        assert served.get("/ready").json()["status"] == "ready"
    assert (copy.root / "mlflow" / "root").read_text() == str(copy.root), "the copy's store was relocated to it"


def test_docs_are_served_without_a_network(service):
    client, _ = service
    page = client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200


def test_unknown_user_takes_the_cold_start_path(service):
    client, data = service
    candidates = data.items()["item_id"].astype(str).tolist()[:50]
    answer = client.post("/rank", json={"user_id": "never-seen", "candidates": candidates, "k": 3}).json()
    assert answer["cold_start"] and answer["explanation"] is None and len(answer["items"]) == 3
    log = data.interactions(["item_idx"])["item_idx"]
    popularity = np.bincount(log, minlength=data.n_items)
    index = dict(zip(data.items()["item_id"].astype(str), data.items()["item_idx"]))
    top = [index[item["item_id"]] for item in answer["items"]]
    assert popularity[top[0]] >= popularity[top[-1]]


@pytest.mark.parametrize("body, field", [({"user_id": "u", "candidates": ["a"], "k": 0}, "k"),
                                          ({"user_id": "u", "k": 3}, "candidates"),
                                          ({"user_id": "", "candidates": ["a"]}, "user_id"),
                                          ({"user_id": "u", "candidates": [], "k": 3}, "candidates"),
                                          ({"user_id": "u", "candidates": ["a", "b", "a"]}, "candidates"),
                                          ({"user_id": "u" * 257, "candidates": ["a"]}, "user_id"),
                                          ({"user_id": "u", "candidates": ["a", "b" * 257]}, 1),
                                          ({"user_id": "u", "candidates": [str(i) for i in range(10_001)]}, "candidates")])
def test_malformed_requests_get_422_naming_the_field(service, body, field):
    client, _ = service
    response = client.post("/rank", json=body)
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]


def test_an_oversized_body_gets_413_before_it_is_read(service):
    """Declared or streamed in chunks (no Content-Length), a body over the limit is refused, not parsed."""
    from serving.app import MAX_BODY_BYTES

    client, _ = service
    big = b'{"user_id": "u", "candidates": ["' + b"x" * MAX_BODY_BYTES + b'"]}'
    declared = client.post("/rank", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "request body over" in declared.json()["detail"]
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    streamed = client.post("/rank", content=chunks, headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.get("/health").status_code == 200
