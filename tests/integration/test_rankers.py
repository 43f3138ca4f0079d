"""Downstream rankers: the fusion layer, every backbone, splits, point-in-time features, MLflow tracking."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from components.config import load_config
from components.data.prepare import prepare_data
from components.data.tables import TEST, TRAIN, VALID, PreparedDataset, vector_array
from pipelines.studies import table2
from components.features import apply_features
from components.ranker import train_ranker
from components.ranker_data import RankerData, historical_features
from components.workspace import RANKER_METRICS, RANKER_MODEL, Workspace
from models.recommenders import BACKBONES, RationaleFusion, build_recommender, serving_rows

from builders import ranker_config as config
from builders import unit, write_features


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("rankers"))
    prepare_data(config(), ws, progress=False)
    write_features(ws, pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1))
    apply_features(config(), ws)
    return ws


def test_fusion_shapes_and_attention_weights_sum_to_one():
    fusion = RationaleFusion(torch.randn(10, 384), dim=32)
    users = torch.tensor([0, 3, 9])
    e_u = torch.randn(3, 32)
    fused, weights = fusion(users, e_u)
    assert fused.shape == (3, 32) and weights.shape == (3, 2)
    assert torch.allclose(weights.sum(1), torch.ones(3))
    z_u = fusion.to_user(fusion.rationales[users])
    assert torch.allclose(fused, weights[:, :1] * e_u + weights[:, 1:] * z_u, atol=1e-6)
    served, _ = fusion(users, e_u, rationales=fusion.rationales[users])  # serving passes Feast's rows
    assert torch.allclose(served, fused)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_each_backbone_trains_one_epoch_with_rationale_fusion(workspace, backbone):
    result = train_ranker(config(backbone=backbone, variant="reland"), workspace, progress=False)
    assert result["epochs"] == 1 and 0 <= result["test_ndcg@10"] <= result["test_hit@10"] <= 1
    assert (workspace.ranker(f"{backbone}-reland") / RANKER_MODEL).exists()


@pytest.mark.parametrize("variant", ["id", "item_text", "rationale_only"])
def test_every_variant_trains(workspace, variant):
    assert train_ranker(config(backbone="lightgcn", variant=variant), workspace, progress=False)["test_users"] > 0


def test_serving_rows_score_like_training_batches(workspace):
    data = RankerData(PreparedDataset(workspace.prepared), "seq", max_len=6)
    model = build_recommender("sasrec", data.n_users, data.n_items, 16, rationales=torch.randn(data.n_users, 384),
                              max_len=6).eval()
    batch = data.seq_batch(data.test.rows[:4])
    rows = serving_rows(batch["users"], batch["sequences"], model.fusion.rationales[batch["users"]])
    assert torch.allclose(model(rows), model.score(batch), atol=1e-5)


def test_splits_exclusions_and_sequence_prefixes(workspace):
    prepared = PreparedDataset(workspace.prepared)
    table = prepared.interactions()
    cf = RankerData(prepared, "cf")
    user = int(cf.test.users[0])
    mine = table[table["user_idx"] == user]
    excluded = set(cf.test.exclude.indices[cf.test.exclude.indptr[user]: cf.test.exclude.indptr[user + 1]].tolist())
    assert excluded == set(mine.loc[mine["cf_split"].isin([TRAIN, VALID]), "item_idx"]), "test ranks without known items"
    excluded = set(cf.valid.exclude.indices[cf.valid.exclude.indptr[user]: cf.valid.exclude.indptr[user + 1]].tolist())
    assert excluded == set(mine.loc[mine["cf_split"] == TRAIN, "item_idx"])
    seq = RankerData(prepared, "seq", max_len=3)
    assert len(seq.test.exclude.indices) == 0, "sequential models rank every item, as RecBole does"
    row = int(seq.test.rows[0])
    user_rows = np.flatnonzero(seq.users == seq.users[row])
    sequences, lengths = seq.prefixes(np.array([row]))
    expected = seq.items[user_rows[user_rows < row]][-3:] + 1
    assert lengths.tolist() == [len(expected)] and sequences[0, :len(expected)].tolist() == expected.tolist()
    assert seq.split[row] == TEST and not (set(seq.train_rows) & set(seq.test.rows))


def test_windows_cover_every_training_target_once(workspace):
    seq = RankerData(PreparedDataset(workspace.prepared), "seq", max_len=4)
    batch = seq.window_batch(seq.train_rows)
    real = batch["window_targets"] >= 0
    train = np.flatnonzero(seq.split == TRAIN)
    later = train[train > seq.user_start[train]]  # every training row after a user's first is a target once
    assert sorted(batch["window_targets"][real].tolist()) == sorted(seq.items[later].tolist())
    assert real.sum() == len(later) and (batch["sequences"][real] > 0).all()
    assert torch.equal(batch["sequences"][:, 1:][real[:, 1:]] - 1, batch["window_targets"][:, :-1][real[:, 1:]]), \
        "each position's target is the next position's input"
    partners = seq.same_target_partners(np.random.default_rng(0))
    mine = seq.window_batch(seq.train_rows)["targets"]
    assert torch.equal(seq.window_batch(partners[seq.train_rows])["targets"], mine), "DuoRec positives share the target"


def test_training_features_are_point_in_time(tmp_path):
    ws = Workspace(tmp_path)
    prepare_data(config(), ws, progress=False)
    day1 = pd.Timestamp("2026-11-01", tz="UTC")
    write_features(ws, day1, seed=1)
    first = pq.read_table(ws.user_rationales)
    write_features(ws, day1 + pd.Timedelta(days=1), seed=2)
    pq.write_table(pa.concat_tables([first, pq.read_table(ws.user_rationales)]), ws.user_rationales)
    apply_features(config(), ws)
    users = PreparedDataset(ws.prepared).users().sort_values("user_idx")["user_id"]
    cfg = config().features
    reference = "user_rationale_embedding:rationale_embedding"
    got = historical_features(ws, cfg, reference, users, day1 + pd.Timedelta(hours=12))
    assert np.allclose(got, unit(len(users), 1), atol=1e-6), "a training row never sees later features"
    got = historical_features(ws, cfg, reference, users, day1 + pd.Timedelta(days=1, hours=1))
    assert np.allclose(got, unit(len(users), 2), atol=1e-6)
    with pytest.raises(ValueError, match="user_rationale_embedding.*no 'rationale_embedding'"):
        historical_features(ws, cfg, reference, users, day1 - timedelta(hours=1))


def test_training_before_the_features_are_applied_says_which_command_to_run(tmp_path):
    ws = Workspace(tmp_path)
    prepare_data(config(), ws, progress=False)
    with pytest.raises(FileNotFoundError, match="feature view 'item_text_embedding' is not registered.*features apply"):
        train_ranker(config(backbone="lightgcn", variant="item_text"), ws, progress=False)


def test_table2_is_tracked_in_mlflow_and_registers_a_servable_model(workspace):
    import mlflow

    frame = table2(config(), workspace, backbones=("lightgcn", "gru4rec"), progress=False)
    assert len(frame) == 6 and {"p_ndcg@10_vs_id", "lift_ndcg@10_vs_id"} <= set(frame.columns)
    assert (workspace.root / "ranker" / "table2-synthetic.md").exists()
    experiment = mlflow.get_experiment_by_name("table2-synthetic")
    runs = mlflow.search_runs([experiment.experiment_id])
    trained = runs[runs["params.ranker.backbone"].notna()]
    assert len(trained) == 6 and trained["metrics.test_ndcg_at_10"].notna().all()
    assert (trained["params.data_hash"].str.len() == 16).all()
    history = mlflow.MlflowClient().get_metric_history(trained["run_id"].iloc[0], "valid_ndcg_at_10")
    assert [m.step for m in history] == [0]
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("reland-ranker-synthetic", "champion")
    source = trained[trained["run_id"] == champion.run_id]
    assert len(source) == 1, "the registered version points at the run that trained it, with its metrics"
    best = frame.loc[frame["best_valid_ndcg@10"].idxmax()] if "best_valid_ndcg@10" in frame else None
    assert champion.tags["backbone"] == source["params.ranker.backbone"].iloc[0]
    assert {"variant", "data_hash", "pool_version", "rationale_template"} <= set(champion.tags) and champion.description
    assert best is None or (best["backbone"], best["variant"]) == (champion.tags["backbone"], champion.tags["variant"])
    local = Path(mlflow.artifacts.download_artifacts(f"models:/reland-ranker-synthetic@champion"))
    requirements = (local / "requirements.txt").read_text().split()
    assert "reland-platform" not in " ".join(requirements) and "torch==2.2.1" in requirements, requirements
    assert (local / "code" / "models" / "recommenders" / "base.py").exists(), "the model's classes travel with it"
    model = mlflow.pyfunc.load_model("models:/reland-ranker-synthetic@champion")
    inputs = model.metadata.get_input_schema().input_types()
    assert len(inputs) == 1
    width = model.metadata.get_input_schema().inputs[0].shape[1]
    scores = model.predict(np.zeros((2, width), np.float32))
    assert scores.shape == (2, PreparedDataset(workspace.prepared).n_items)


def test_studies_reuse_rankers_trained_on_the_same_inputs(workspace, monkeypatch):
    import mlflow

    import components.ranker as ranker

    trained, train = [], ranker.train_ranker
    monkeypatch.setattr(ranker, "train_ranker", lambda cfg, *args, **kwargs: (
        trained.append(cfg.ranker.variant), train(cfg, *args, **kwargs))[1])
    first = table2(config(), workspace, backbones=("neumf",), progress=False, register=False)
    again = table2(config(), workspace, backbones=("neumf",), progress=False, register=False)
    assert trained == ["id", "item_text", "reland"]
    pd.testing.assert_frame_equal(first, again)
    runs = mlflow.search_runs(experiment_names=["table2-synthetic"])
    assert (runs[runs["params.ranker.backbone"] == "neumf"]["params.reused"] == "True").sum() == 3
    table2(config(batch_size=128), workspace, backbones=("neumf",), variants=("id",), progress=False, register=False)
    assert trained == ["id", "item_text", "reland", "id"]


def test_a_new_pool_reaches_the_rankers_that_fuse_it_and_only_those(tmp_path):
    from components.steps import STEPS, fingerprint, record_step

    ws = Workspace(tmp_path)
    ws.feast_registry.write_bytes(b"registry")
    for step in ("prepare_data", "embed_item_text"):
        record_step(config(), ws, step, {}, 0.0)
    rationales = ws.user_rationales
    prints = {variant: [] for variant in ("reland", "seed_vector", "item_text", "id")}
    for content in (b"pool v1", b"pool v2, larger"):  # the registry is hashed by presence: upstream tells
        rationales.write_bytes(content)
        for step in ("retrieve_rationales", "apply_features"):
            record_step(config(), ws, step, {}, 0.0)
        for variant, found in prints.items():
            found.append(fingerprint(config(variant=variant), ws, STEPS["train_ranker"]))
    assert prints["reland"][0] != prints["reland"][1] and prints["seed_vector"][0] != prints["seed_vector"][1]
    assert prints["item_text"][0] == prints["item_text"][1] and prints["id"][0] == prints["id"][1], \
        "a ranker that reads no rationale is not retrained for a new pool"


@pytest.mark.parametrize("backbone", ["gru4rec", "sasrec"])
def test_length_buckets_give_the_outputs_of_one_padded_batch(backbone):
    model = build_recommender(backbone, 5, 30, 8, None, None).eval()
    lengths = torch.tensor([1, 2, 3, 5, 9, 17, 20])
    sequences = torch.randint(1, 31, (len(lengths), 20)) * (torch.arange(20)[None, :] < lengths[:, None])
    real = torch.arange(20)[None, :] < lengths[:, None]
    with torch.no_grad():
        bucketed, padded = model.bucketed_outputs(sequences, lengths), model.sequence_outputs(sequences)
    torch.testing.assert_close(bucketed[real], padded[real], rtol=1e-4, atol=1e-5)


def test_the_seed_vector_control_fuses_each_users_seed_behaviour_vector(tmp_path):
    from components.ranker import assigned_seed_vectors

    ws = Workspace(tmp_path)
    prepare_data(config(), ws, progress=False)
    users = PreparedDataset(ws.prepared).users()
    ids = users["user_id"].astype(str).tolist()
    write_features(ws, pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1), seed_ids=ids[:2])
    vectors = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    pq.write_table(pa.Table.from_arrays([pa.array(ids), vector_array(vectors)], names=["user_id", "vector"]),
                   ws.user_vectors)
    ordered = users.sort_values("user_idx")["user_id"].astype(str)
    seed_of = {user: ids[i % 2] for i, user in enumerate(ids)}  # as write_features assigns them
    expected = np.stack([vectors[ids.index(seed_of[user])] for user in ordered])
    np.testing.assert_array_equal(assigned_seed_vectors(ws, ordered), expected)
    apply_features(config(), ws)
    assert train_ranker(config(variant="seed_vector"), ws, progress=False)["test_users"] > 0


def test_neumf_full_ranking_scores_equal_its_pair_scores():
    model = build_recommender("neumf", 7, 50, 8, None, None).eval()
    users, items = model.users(torch.arange(7)), model.items()
    with torch.no_grad():
        expected = model.pair_score(users[:, None], items[None])
        for user_block, item_block in ((3, 16), (7, 50), (16, 1024)):  # ragged, exact and oversized tiles
            torch.testing.assert_close(model.match(users, items, user_block, item_block), expected)


def test_fusion_regularisers_are_active_in_training_and_off_in_evaluation():
    from components.ranker import make_optimiser

    torch.manual_seed(0)
    fusion = RationaleFusion(torch.randn(6, 384), dim=8, dropout=0.5, input_dropout=0.3, gate_bias=2.0)
    users = torch.arange(6)
    fusion.train()
    assert not torch.allclose(fusion.project(users), fusion.project(users)), "dropout draws differ in training"
    fusion.eval()
    torch.testing.assert_close(fusion.project(users), fusion.to_user(fusion.rationales[users]))
    with torch.no_grad():
        fusion.attention.weight.zero_()  # equal logits: the gate is the bias alone
    _, weights = fusion(users, torch.randn(6, 8))
    torch.testing.assert_close(weights[:, 0], torch.full((6,), float(torch.sigmoid(torch.tensor(2.0)))))
    model = build_recommender("lightgcn", 6, 10, 8, rationales=torch.randn(6, 384),
                              adjacency=torch.eye(16).to_sparse_csr())
    optimiser = make_optimiser(model, {"lr": 0.01, "weight_decay": 1e-6, "fusion_weight_decay": 0.1})
    backbone, fused = optimiser.param_groups
    assert backbone["weight_decay"] == 1e-6 and fused["weight_decay"] == 0.1
    assert {id(p) for p in fused["params"]} == {id(p) for p in model.fusion.parameters()}


def test_the_residual_fusion_starts_as_the_backbone_and_learns_its_blend():
    fusion = RationaleFusion(torch.randn(6, 384), dim=8, residual=True)
    users, e_u = torch.arange(6), torch.randn(6, 8)
    fused, _ = fusion(users, e_u)
    assert torch.equal(fused, e_u), "blend 0: the untrained fusion is exactly the backbone"
    fused.sum().backward()
    assert fusion.blend.grad is not None and fusion.blend.grad.abs().item() > 0


def test_a_residual_fusion_reuses_the_item_text_backbone_and_never_moves_it(workspace):
    plain = train_ranker(config(variant="item_text", repeat=3), workspace, progress=False)
    fused = train_ranker(config(variant="reland", repeat=3), workspace, progress=False)
    assert fused["backbone_run"]["reused"] and fused["backbone_run"]["best_epoch"] == plain["best_epoch"]
    assert fused["best_valid_ndcg@10"] >= plain["best_valid_ndcg@10"], "kept only where validation improves"
    before = torch.load(workspace.ranker("sasrec-item_text-r3") / RANKER_MODEL, weights_only=True)["state"]
    after = torch.load(workspace.ranker("sasrec-reland-r3") / RANKER_MODEL, weights_only=True)["state"]
    assert {k for k in after if k not in before} == {k for k in after if k.startswith("fusion.")}
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen backbone is the +f_item one"


def test_a_ranker_loads_with_the_fusion_it_was_trained_with(workspace):
    from components.ranker import load_ranker

    train_ranker(config(backbone="gru4rec", variant="reland", fusion_training="joint"), workspace, progress=False)
    model = load_ranker(config(backbone="gru4rec", variant="reland"), workspace)  # the default is residual
    assert model.fusion.blend is None


def test_training_keeps_the_start_when_no_epoch_beats_it():
    from components.training import fit

    kept = []
    curve, best = fit(lambda epoch, validate: {"loss": 1.0, "score": 0.1 + epoch / 100}, epochs=5, patience=2,
                      score="score", keep_best=kept.append, start={"epoch": -1, "score": 0.5})
    assert best["epoch"] == -1 and kept == [] and len(curve) == 2


def test_training_validates_every_eval_step_epochs_and_after_the_last():
    """Patience counts validations: with eval_step 3, two stale validations stop it six epochs later."""
    from components.training import fit

    scores = {2: 0.3, 5: 0.2, 8: 0.1}
    kept = []
    curve, best = fit(lambda epoch, validate: {"loss": 1.0, **({"score": scores[epoch]} if validate else {})},
                      epochs=20, patience=2, score="score", keep_best=kept.append, eval_step=3)
    assert [row["epoch"] for row in curve if "score" in row] == [2, 5, 8] and len(curve) == 9
    assert best["epoch"] == 2 and [row["epoch"] for row in kept] == [2]
    short, _ = fit(lambda epoch, validate: {"loss": 1.0, **({"score": 0.1} if validate else {})},
                   epochs=4, patience=5, score="score", keep_best=kept.append, eval_step=3)
    assert [row["epoch"] for row in short if "score" in row] == [2, 3], "the last epoch is always validated"


def test_a_ranker_with_eval_step_validates_every_nth_epoch(workspace):
    import json

    train_ranker(config(backbone="lightgcn", variant="id", epochs=5, eval_step=2, patience=5, repeat=6), workspace,
                 progress=False)
    curve = json.loads((workspace.ranker("lightgcn-id-r6") / RANKER_METRICS).read_text())["curve"]
    assert [row["epoch"] for row in curve if "valid_ndcg@10" in row] == [1, 3, 4] and len(curve) == 5


def test_unfused_rankers_trained_on_the_same_inputs_share_one_backbone(workspace, monkeypatch):
    import components.ranker as ranker

    first = train_ranker(config(variant="item_text", repeat=4), workspace, progress=False)
    monkeypatch.setattr(ranker, "fit_ranker", lambda *a, **k: pytest.fail("a stored backbone was trained again"))
    again = train_ranker(config(variant="item_text", repeat=4), workspace, progress=False)
    assert again["backbone_run"] == {"reused": True} and again["test_ndcg@10"] == first["test_ndcg@10"]
    with pytest.raises(pytest.fail.Exception):
        train_ranker(config(variant="item_text", repeat=4, lr=0.01), workspace, progress=False)


def test_a_backbone_trained_offline_is_the_one_train_ranker_finds(workspace, tmp_path, monkeypatch):
    """``python -m pipelines.backbones`` (the GPU box's trainer, no Feast) stores under the key train_ranker computes."""
    import yaml

    import components.ranker as ranker
    from pipelines.backbones import train_one

    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(config(variant="item_text", repeat=7).model_dump(mode="json")))
    offline = train_one(str(workspace.root), str(study), "sasrec", "item_text", 7, "cpu")
    assert offline["ranker"] == "sasrec-item_text-r7" and not offline["reused"]
    monkeypatch.setattr(ranker, "fit_ranker", lambda *a, **k: pytest.fail("the offline backbone was trained again"))
    found = train_ranker(config(variant="item_text", repeat=7), workspace, progress=False)
    assert found["backbone_run"] == {"reused": True} and found["best_epoch"] == offline["best_epoch"]


def test_each_backbone_declares_its_settings_and_rejects_unknown_ones():
    from components.ranker import ranker_settings

    assert BACKBONES["sasrec"].defaults["dropout"] == 0.5 and BACKBONES["gru4rec"].defaults["dropout"] == 0.3
    assert BACKBONES["ngcf"].defaults["layers"] == 3 and "dropout" not in BACKBONES["lightgcn"].defaults
    with pytest.raises(ValueError, match="neumf has no setting 'heads'"):
        build_recommender("neumf", 5, 10, 8, heads=2)
    tuned = {"sasrec": {"lr": 0.01, "dropout": 0.2}, "sasrec-reland": {"dropout": 0.3, "gate_bias": 1.0}}
    settings = ranker_settings(config(tuned=tuned, weight_decay=1e-4).ranker)
    assert settings["lr"] == 0.01 and settings["dropout"] == 0.3 and settings["gate_bias"] == 1.0
    assert settings["weight_decay"] == 1e-4 and settings["heads"] == 2
    assert ranker_settings(config(tuned=tuned, variant="id").ranker)["dropout"] == 0.2
    assert "heads" not in ranker_settings(config(backbone="neumf", heads=4).ranker)  # not NeuMF's: ignored
    with pytest.raises(ValueError, match="'sasrek' names no backbone"):
        config(tuned={"sasrek": {"lr": 0.1}})


def test_repeats_give_mean_and_spread_and_tests_on_seed_averaged_users(workspace):
    import mlflow

    from pipelines.studies import cell_per_user
    from components.ranker import load_per_user

    frame = table2(config(), workspace, backbones=("lightgcn",), variants=("id", "item_text"), progress=False,
                   register=False, repeats=2)
    assert frame["repeats"].tolist() == [2, 2] and frame["test_ndcg@10_sd"].notna().all()
    runs = [load_per_user(workspace, name) for name in ("lightgcn-id", "lightgcn-id-r1")]
    assert not np.array_equal(runs[0]["ndcg@10"], runs[1]["ndcg@10"]), "repeats train with different seeds"
    averaged = cell_per_user(workspace, ["lightgcn-id", "lightgcn-id-r1"])
    np.testing.assert_allclose(averaged["ndcg@10"], (runs[0]["ndcg@10"] + runs[1]["ndcg@10"]) / 2)
    assert frame.loc[0, "test_ndcg@10"] == pytest.approx(averaged["ndcg@10"].mean(), abs=1e-6)  # metrics: 6 digits
    cells = mlflow.search_runs(experiment_names=["table2-synthetic"], filter_string="params.repeats = '2'")
    cell = cells[cells["params.cell"] == "lightgcn-id"].iloc[0]
    children = mlflow.search_runs(experiment_names=["table2-synthetic"],
                                  filter_string=f"tags.mlflow.parentRunId = '{cell['run_id']}'")
    assert len(children) == 2 and cell["metrics.test_ndcg_at_10_sd"] >= 0
    assert (workspace.root / "ranker" / "table2-synthetic-layout.md").read_text().count(" ± ") == 4


def test_tuning_searches_on_validation_and_writes_a_config_the_studies_read(workspace, monkeypatch):
    import pipelines.tuning as tuning
    from components.config import load_config as load
    from components.ranker import ranker_settings

    assert set(tuning.search_space(config(variant="reland"))) == {"fusion_dropout", "fusion_input_dropout",
                                                                  "fusion_weight_decay", "gate_bias"}
    assert "lr" in tuning.search_space(config(variant="reland", fusion_training="joint"))
    assert "heads" not in tuning.search_space(config()) and "fusion_dropout" not in tuning.search_space(
        config(variant="item_text"))
    calls, train = [], tuning.train_ranker
    monkeypatch.setattr(tuning, "train_ranker", lambda *a, **k: (calls.append(k), train(*a, **k))[1])
    result = tuning.tune(config(backbone="gru4rec", variant="reland"), workspace, trials=2, progress=False)
    assert len(calls) == 2 and all(k["test"] is False and k["save"] is False for k in calls), "test split unseen"
    assert result["trials"] == 2 and 0 <= result["best_valid_ndcg@10"] <= 1
    assert not (workspace.root / "ranker" / "gru4rec-reland-r0").exists()
    tuned = load(file=result["file"], overrides={"synthetic": {"users": 150, "clusters": 3}})
    settings = ranker_settings(tuned.ranker.model_copy(update={"backbone": "gru4rec", "variant": "reland"}))
    assert settings["fusion_dropout"] == pytest.approx(result["best"]["fusion_dropout"])
    resumed = tuning.tune(config(backbone="gru4rec", variant="reland"), workspace, trials=2, progress=False)
    assert resumed["trials"] == 2 and len(calls) == 2, "a finished search is not run again"


def test_a_second_tuning_worker_on_the_same_study_draws_its_own_values(tmp_path):
    import optuna

    import pipelines.tuning as tuning

    workspace = Workspace(tmp_path)
    cfg, space = config(backbone="gru4rec", variant="item_text"), {"lr": optuna.distributions.FloatDistribution(
        1e-4, 1e-2, log=True)}
    first = tuning.open_study(cfg, workspace).ask(space)  # a worker's trial, still running
    second = tuning.open_study(cfg, workspace).ask(space)  # another process opening the study meanwhile
    assert first.params != second.params
    alone = tuning.open_study(cfg, Workspace(workspace.root / "elsewhere")).ask(space)
    assert alone.params == first.params, "a search on its own is reproducible"


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test plays the dead process by hand
def test_a_tuning_trial_whose_process_died_is_run_again_with_its_values(workspace, monkeypatch):
    import time

    import optuna

    import pipelines.tuning as tuning

    monkeypatch.setattr(tuning, "HEARTBEAT_S", 1)
    cfg = config(backbone="gru4rec", variant="item_text")
    study = tuning.open_study(cfg, workspace)
    dead = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    study._storage.record_heartbeat(dead._trial_id)  # then the process "dies": no more heartbeats
    time.sleep(3.5)  # past the 2 s grace even where the store keeps whole seconds
    calls, train = [], tuning.train_ranker
    monkeypatch.setattr(tuning, "train_ranker", lambda c, *a, **k: (calls.append(c.ranker.lr), train(c, *a, **k))[1])
    tuning.tune(cfg, workspace, trials=1, progress=False)
    states = [t.state for t in tuning.open_study(cfg, workspace).trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert calls == [pytest.approx(dead.params["lr"])], "the dead trial's values are tried again, once"


def test_a_changed_default_makes_only_the_rankers_that_use_it_stale(tmp_path, monkeypatch):
    import components.ranker as ranker
    from components.steps import STEPS, fingerprint

    ws, step = Workspace(tmp_path), STEPS["train_ranker"]
    fused, plain = config(variant="reland"), config(variant="item_text")
    before = fingerprint(fused, ws, step), fingerprint(plain, ws, step)
    monkeypatch.setitem(ranker.FUSION_DEFAULTS, "gate_bias", 5.0)
    assert fingerprint(fused, ws, step) != before[0] and fingerprint(plain, ws, step) == before[1]
    monkeypatch.setitem(BACKBONES["sasrec"].defaults, "dropout", 0.2)
    assert fingerprint(plain, ws, step) != before[1]


def test_a_template_bump_makes_the_rationales_stale(tmp_path, monkeypatch):
    import components.prompts as prompts
    from components.steps import STEPS, fingerprint

    ws, step, cfg = Workspace(tmp_path), STEPS["generate_rationales"], config(variant="reland")
    before = fingerprint(cfg, ws, step)
    monkeypatch.setitem(prompts.TEMPLATE_VERSION, "cot", "cot-v999")
    assert fingerprint(cfg, ws, step) != before


def test_a_run_left_running_by_a_killed_process_is_marked_killed_on_the_next_start(tmp_path):
    import socket
    import subprocess

    import mlflow
    from mlflow.tracking import MlflowClient

    from components.tracking import start_run, use_experiment

    ws = Workspace(tmp_path)
    experiment = use_experiment(ws, "rankers-synthetic")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no process holds any more
    client = MlflowClient()
    orphan = client.create_run(experiment, tags={"reland.host": socket.gethostname(), "reland.pid": str(dead.pid)},
                               run_name="sasrec-reland")
    with start_run("still training") as live:
        use_experiment(ws, "rankers-synthetic")
        assert client.get_run(orphan.info.run_id).info.status == "KILLED"
        assert client.get_run(live.info.run_id).info.status == "RUNNING", "a live process's run is left alone"
    assert mlflow.get_run(live.info.run_id).info.status == "FINISHED"


def _open_experiment_when_released(root: str, start, name: str) -> str:
    from components.tracking import use_experiment

    start.wait()
    return use_experiment(Workspace(root), name)


def test_parallel_processes_create_the_tracking_store_and_experiment_once(tmp_path):
    """Two ``reland ranker train`` processes on a new workspace both used to migrate the new SQLite store
    (alembic: 'Online migration expected to match one row') or both create the experiment; one failed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    start = context.Manager().Event()
    with context.Pool(3) as pool:
        pending = [pool.apply_async(_open_experiment_when_released, (str(tmp_path), start, "rankers-synthetic"))
                   for _ in range(3)]
        start.set()
        experiments = {job.get(timeout=120) for job in pending}
    assert len(experiments) == 1


def test_the_model_registry_and_the_configuration_name_the_same_rankers():
    from components.config import BACKBONE_NAMES, VARIANT_NAMES
    from components.ranker import VARIANT_INPUTS

    assert set(BACKBONES) == set(BACKBONE_NAMES) and set(VARIANT_INPUTS) == set(VARIANT_NAMES)


def test_a_controls_study_names_its_cells_or_says_which_exist(tmp_path):
    from pipelines.studies import controls

    with pytest.raises(ValueError, match="unknown control cells \\['profil'\\]; choose from reland, seed_vector"):
        controls(config(), Workspace(tmp_path), cells=("profil",))


def test_cells_trained_in_parallel_lanes_equal_the_sequential_study_and_are_logged_reused(tmp_path):
    import mlflow

    frames = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the lanes' single thread, so both paths sum in the same order
    try:
        for jobs in (2, 1):
            ws = Workspace(tmp_path / f"jobs{jobs}")
            prepare_data(config(epochs=2), ws, progress=False)
            write_features(ws, pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=1))
            apply_features(config(epochs=2), ws)
            frames[jobs] = table2(config(epochs=2), ws, backbones=("sasrec",), variants=("item_text", "reland"),
                                  progress=False, register=False, repeats=2, jobs=jobs)
            if jobs == 2:
                runs = mlflow.search_runs(experiment_names=["table2-synthetic"])
                seeds = runs[runs["tags.mlflow.runName"].str.contains(" seed ", na=False)]
                assert len(seeds) == 4 and (seeds["params.reused"] == "True").all(), "the study only logs the lanes' rankers"
    finally:
        torch.set_num_threads(threads)
    metrics = [c for c in frames[1] if c.startswith(("test_", "best_valid"))]
    pd.testing.assert_frame_equal(frames[2][metrics], frames[1][metrics])
