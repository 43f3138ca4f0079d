"""Step ``generate_rationales``: step-by-step recommendation rationales for every seed user.

Each seed's training history (the encoder task's training split: no validation or test
item reaches a prompt) is condensed by Step 0 and sent with the template; answers are
parsed into Step 1 (preferences, the explanation) and Step 2 (categories and items, the
text the pool embeds).  A malformed answer is re-asked with a stricter instruction up to
``llm.parse_retries`` times, then recorded as failed and left out of the pool.

Outputs: ``pool/rationales.parquet`` and ``pool/rationales.json`` (calls, cache hits,
tokens, LLM seconds, estimated cost, and the same extrapolated to per-user inference
for all users: the KAR-style baseline of the paper's Table 3).
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
from tqdm import tqdm

from components.config import Config, LLMConfig
from components.data.tables import SPLIT_COLUMN, TRAIN, PreparedDataset, write_table
from components.llm_cache import ResponseCache, cache_key
from components.grounding import Catalogue, Grounding, grounding_summary
from components.prompts import (TEMPLATE_VERSION, HistoryItem, Profile, build_messages, condense_history,
                                history_profile, parse_rationale, profile_rationale, unsafe_reason)
from components.workspace import Workspace, atomic_path, write_json
from models.llm import Completion, LLMBackend

PSEUDONYM_KEY_ENV = "RELAND_PSEUDONYM_KEY"
PROFILE_VERSION = "profile-v1"  # the profile control: rationales written from Step 0, no LLM


def make_backend(cfg: LLMConfig) -> LLMBackend:
    if cfg.backend == "openai":
        from models.llm import OpenAIBackend

        return OpenAIBackend(cfg.base_url or "", cfg.model, cfg.api_key_env, cfg.concurrency, cfg.timeout_s,
                             cfg.max_retries, cfg.backoff_s)
    from models.llm import LocalBackend

    # The template's answer has two lines (Step 1, Step 2): stop a row once both are written.
    return LocalBackend(cfg.model_path, cfg.gguf_file, cfg.batch_size, name=cfg.model,
                        stop_after_lines=2 if cfg.prompt == "cot" else 1, device=cfg.device)


def pseudonym_key(workspace: Workspace) -> bytes:
    """The secret behind pseudonyms: ``RELAND_PSEUDONYM_KEY``, else a random key generated into the
    workspace on first use (owner-only).  Never in the source, so nobody outside can reverse a
    pseudonym by hashing candidate ids."""
    if os.environ.get(PSEUDONYM_KEY_ENV):
        return os.environ[PSEUDONYM_KEY_ENV].encode()
    path = workspace.pseudonym_key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
    return path.read_text().strip().encode()


def pseudonym(user_id: str, key: bytes) -> str:
    """A stable stand-in for a user id, for anything that leaves the process."""
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:16]


def seed_histories(data: PreparedDataset, seeds: np.ndarray, task: str, batch_rows: int) -> dict[int, list[HistoryItem]]:
    """Training-split items of each seed user, oldest first, read in chunks."""
    wanted = np.zeros(data.n_users, bool)
    wanted[seeds] = True
    column = SPLIT_COLUMN[task]
    rows = []
    for batch in data.iter_interactions(["user_idx", "item_idx", column], batch_rows):
        keep = wanted[batch["user_idx"]] & (batch[column] == TRAIN)
        rows.append(pd.DataFrame({"user_idx": batch["user_idx"][keep], "item_idx": batch["item_idx"][keep]}))
    items = data.items().set_index("item_idx")
    histories: dict[int, list[HistoryItem]] = {int(s): [] for s in seeds}
    for user, item in pd.concat(rows).itertuples(index=False):
        row = items.loc[item]
        year = None if pd.isna(row["year"]) else int(row["year"])
        histories[int(user)].append(HistoryItem(row["title"] or "", row["brand"], tuple(row["categories"]), year))
    return histories


@dataclass(frozen=True)
class Usage:
    """What answers cost, summed over every answer a seed needed (re-asks included)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.seconds + other.seconds)

    @classmethod
    def of(cls, completion: Completion) -> "Usage":
        return cls(completion.prompt_tokens, completion.completion_tokens, completion.seconds)


@dataclass
class _Job:
    seed: int
    history: list[str]
    profile: Profile
    messages: list[dict]
    key: str
    history_terms: set[str]
    attempts: int = 0
    completion: Completion | None = None
    parsed: tuple[str, str] | None = None
    grounding: Grounding | None = None  # once parsed
    unsafe: str | None = None  # why a parsed answer was refused (see prompts.unsafe_reason)
    version: str = ""
    temperature: float = 0.0
    spent: Usage = Usage()


def _ask(jobs: list[_Job], backends: dict, cache: ResponseCache, cfg: LLMConfig, version: str,
         users: dict[int, str], counters: dict, progress: bool, temperature: float = 0.0) -> None:
    """Answer ``jobs`` from the cache, calling the LLM (in committed batches) only for misses."""
    cached = cache.get([job.key for job in jobs])
    missing = [job for job in jobs if job.key not in cached]
    counters["cache_hits"] += len(jobs) - len(missing)
    for job in jobs:
        job.completion = cached.get(job.key)
    if not missing:
        return
    if "llm" not in backends:  # the model is loaded only when an answer is missing
        backends["llm"] = backends["make"]()
    backend = backends["llm"]
    step = cfg.batch_size * (cfg.concurrency if cfg.backend == "openai" else 1)
    for start in tqdm(range(0, len(missing), step), desc="LLM", unit="batch", disable=not progress or not missing):
        batch = missing[start: start + step]

        def keep(index: int, answer: Completion, batch=batch) -> None:  # committed as it arrives
            job = batch[index]
            cache.put([(job.key, cfg.model, version, job.messages, answer)])
            job.completion = answer
            counters["calls"] += 1

        backend.complete([j.messages for j in batch], cfg.max_new_tokens, [users[j.seed] for j in batch], keep,
                         temperature=temperature)


def plan_jobs(config: Config, workspace: Workspace, seeds: pd.DataFrame,
              catalogue: Catalogue | None = None) -> tuple[list[_Job], dict[int, str]]:
    """One prompt per user in ``seeds`` (user_idx, user_id), and each user's pseudonym.

    With a ``catalogue``, each job also carries the catalogue terms of the seed's history.
    """
    cfg = config.llm
    data = PreparedDataset(workspace.prepared)
    path = data.stats["category_style"] == "path"
    histories = seed_histories(data, seeds["user_idx"].to_numpy(), config.encoder.task, config.data.chunk_rows)
    version = TEMPLATE_VERSION[cfg.prompt]
    key = pseudonym_key(workspace)
    users = {int(u): pseudonym(str(raw), key) for u, raw in zip(seeds["user_idx"], seeds["user_id"])}
    jobs = []
    for seed in seeds["user_idx"]:
        history = histories[int(seed)]
        lines = condense_history(history, cfg.history_items, cfg.max_title_chars, " > " if path else ", ")
        profile = history_profile(history, path, max_title_chars=cfg.max_title_chars)
        messages = build_messages(lines, profile.lines(), config.data.domain, cfg.prompt)
        terms = catalogue.history_terms(history_texts(history)) if catalogue else set()
        jobs.append(_Job(int(seed), lines, profile, messages, cache_key(cfg.model, version, messages), terms,
                         version=version))
    return jobs, users


def template_settings(config: Config) -> dict[str, str]:
    """The prompt template's version, declared in code: part of the step's fingerprint, so a template
    bump makes the rationales stale (their cache keys change with it, so old answers are not reused)."""
    return {"template": TEMPLATE_VERSION[config.llm.prompt]}


def history_texts(history: list[HistoryItem]) -> list[str]:
    """Each history item as one text (title, brand, categories), for finding its catalogue terms."""
    return [" , ".join([item.title, item.brand or "", *item.categories]) for item in history]


def _stricter(job: _Job, config: Config) -> None:
    """Re-ask with a stricter instruction: a new prompt, so a new cache key."""
    job.messages = build_messages(job.history, job.profile.lines(), config.data.domain, config.llm.prompt, strict=True)
    job.key = cache_key(config.llm.model, TEMPLATE_VERSION[config.llm.prompt], job.messages)


def _resampled(job: _Job, config: Config) -> _Job:
    """The same prompt asked again with sampling: its own cache key (the version names the temperature)."""
    version = f"{TEMPLATE_VERSION[config.llm.prompt]}+t{config.llm.resample_temperature:g}"
    return _Job(job.seed, job.history, job.profile, job.messages, cache_key(config.llm.model, version, job.messages),
                job.history_terms, job.attempts, version=version, temperature=config.llm.resample_temperature)


def _parse(jobs: list[_Job], config: Config, catalogue: Catalogue) -> None:
    for job in jobs:
        job.attempts += 1
        job.spent = job.spent + Usage.of(job.completion)
        job.parsed = parse_rationale(job.completion.text, config.llm.prompt)
        job.unsafe = unsafe_reason(*job.parsed) if job.parsed else None
        if job.unsafe:  # never served: treated as malformed (re-asked, then failed)
            job.parsed = None
        job.grounding = catalogue.ground(*job.parsed, job.history_terms) if job.parsed else None


def _answer(jobs: list[_Job], config: Config, catalogue: Catalogue, backends: dict, cache: ResponseCache,
            users: dict[int, str], counters: dict, progress: bool) -> None:
    """Ask, re-ask malformed answers strictly, then re-ask vacuous ones once with sampling."""
    cfg = config.llm
    pending = jobs
    for attempt in range(cfg.parse_retries + 1):
        _ask(pending, backends, cache, cfg, TEMPLATE_VERSION[cfg.prompt], users, counters, progress)
        _parse(pending, config, catalogue)
        pending = [j for j in pending if j.parsed is None]
        if not pending or attempt == cfg.parse_retries:
            break
        for job in pending:
            _stricter(job, config)
    vacuous = [job for job in jobs if job.grounding is not None and job.grounding.vacuous]
    if not vacuous or cfg.resample_temperature <= 0:
        return
    again = [_resampled(job, config) for job in vacuous]
    _ask(again, backends, cache, cfg, again[0].version, users, counters, progress, again[0].temperature)
    _parse(again, config, catalogue)
    counters["resampled"] = len(again)
    for job, retry in zip(vacuous, again):
        spent = job.spent + retry.spent
        if retry.parsed and not retry.grounding.vacuous:
            job.__dict__.update(retry.__dict__)
        else:
            job.attempts = retry.attempts
        job.spent = spent


def generate_rationales(config: Config, workspace: Workspace, backend: LLMBackend | None = None,
                        progress: bool = True) -> RationaleSummary:
    """Rationales for every seed in ``pool/seeds.parquet``; resumable through the response cache.

    ``llm.source: profile`` writes each rationale from the Step-0 profile without any LLM
    call (a control: does grounded text of this kind lift at all?).
    """
    cfg = config.llm
    seeds = pd.read_parquet(workspace.seeds)
    items = PreparedDataset(workspace.prepared).items()
    if items["title"].isna().all():
        raise ValueError(f"{workspace.prepared / 'items.parquet'}: no item has a title (the dataset was loaded "
                         "ID-only): rationales and item-text features need item text; add an item table")
    catalogue = Catalogue(items)
    jobs, users = plan_jobs(config, workspace, seeds, catalogue)
    counters = {"calls": 0, "cache_hits": 0, "resampled": 0}
    started = time.perf_counter()
    if cfg.source == "profile":
        for job in jobs:
            job.completion, job.attempts, job.version = Completion("", 0, 0, 0.0), 0, PROFILE_VERSION
            job.parsed = profile_rationale(job.profile, config.data.domain)
            job.grounding = catalogue.ground(*job.parsed, job.history_terms)
        return _write_outputs(workspace, config, seeds, jobs, counters, time.perf_counter() - started, "none")
    backends = {"make": lambda: backend or make_backend(cfg)}
    cache = ResponseCache(workspace.llm_cache)
    try:
        _answer(jobs, config, catalogue, backends, cache, users, counters, progress)
    finally:
        cache.close()
    return _write_outputs(workspace, config, seeds, jobs, counters, time.perf_counter() - started, cfg.model)


def _reasks(job: _Job, cached: dict[str, Completion], config: Config, catalogue: Catalogue) -> list[_Job]:
    """The re-asks ``job`` may need: both kinds while its answer is unknown, else only the one its
    cached answer calls for (the stricter one when malformed, the sampled one when vacuous)."""
    stricter = copy.copy(job)
    _stricter(stricter, config)
    resampled = [_resampled(job, config)] if config.llm.resample_temperature > 0 else []
    if job.key not in cached:
        return [stricter, *resampled]
    answered = copy.copy(job)
    answered.completion = cached[job.key]
    _parse([answered], config, catalogue)
    if answered.parsed is None:
        return [stricter]
    return resampled if answered.grounding.vacuous else []


def export_batch(config: Config, workspace: Workspace, target: Path, every_user: bool = False,
                 strict: bool = True) -> dict:
    """Write the prompts the cache cannot answer as an OpenAI batch file (for a GPU box or a batch API).

    ``every_user`` plans a prompt for every user (per-user inference, the 100% budget) instead
    of the seeds; ``strict`` adds the re-asks: for a prompt not yet answered, its stricter re-ask
    and its sampled re-ask (``llm.resample_temperature``), so malformed and vacuous answers need no
    second round trip; for one already answered (a first round imported), only the re-ask its answer
    needs.  The final assistant message is a prefill (``continue_final_message``).
    """
    cfg = config.llm
    if every_user:
        seeds = PreparedDataset(workspace.prepared).users()[["user_idx", "user_id"]]
    else:
        seeds = pd.read_parquet(workspace.seeds)
    catalogue = Catalogue(PreparedDataset(workspace.prepared).items()) if strict else None
    jobs, users = plan_jobs(config, workspace, seeds, catalogue)
    cache = ResponseCache(workspace.llm_cache)
    try:
        known = cache.get([job.key for job in jobs])
        if strict:
            reasks = [again for job in jobs for again in _reasks(job, known, config, catalogue)]
            known.update(cache.get([job.key for job in reasks]))
            jobs += reasks
    finally:
        cache.close()
    written = set()
    with atomic_path(target) as tmp, tmp.open("w") as out:
        for job in jobs:
            if job.key in known or job.key in written:
                continue
            written.add(job.key)
            body = {"model": cfg.model, "messages": job.messages, "max_tokens": cfg.max_new_tokens,
                    "temperature": job.temperature, "user": users[job.seed],
                    "metadata": {"template_version": job.version, "model": cfg.model},
                    "continue_final_message": job.messages[-1]["role"] == "assistant"}
            out.write(json.dumps({"custom_id": job.key, "method": "POST", "url": "/v1/chat/completions",
                                  "body": body}, ensure_ascii=False) + "\n")
    return {"prompts": len(jobs), "requests": len(written), "file": str(target)}


def import_batch(workspace: Workspace, requests: Path, results: Path) -> dict:
    """Store a batch run's answers in the response cache; failed or unknown lines are counted, not stored.

    A request answered twice (a resumed worker, or two workers appending to one file) keeps its first
    answer and counts as a duplicate, so ``imported`` never exceeds ``requests``."""
    with requests.open() as handle:
        asked = {r["custom_id"]: r["body"] for r in map(json.loads, filter(str.strip, handle))}
    entries, failed, unknown, duplicates = {}, 0, 0, 0
    with results.open() as handle:
        for line in filter(str.strip, handle):
            result = json.loads(line)
            key = result.get("custom_id")
            body = asked.get(key)
            response = result.get("response") or {}
            if body is None:
                unknown += 1
                continue
            if result.get("error") or response.get("status_code") != 200:
                failed += 1
                continue
            if key in entries:
                duplicates += 1
                continue
            answer, usage = response["body"], response["body"]["usage"]
            last = body["messages"][-1]
            prefill = last["content"] if last["role"] == "assistant" else ""
            text = (prefill + answer["choices"][0]["message"]["content"]).strip()
            entries[key] = (key, body["metadata"]["model"], body["metadata"]["template_version"], body["messages"],
                            Completion(text, usage["prompt_tokens"], usage["completion_tokens"],
                                       float(answer.get("reland_seconds", 0.0))))
    cache = ResponseCache(workspace.llm_cache)
    try:
        cache.put(list(entries.values()))
    finally:
        cache.close()
    return {"imported": len(entries), "failed": failed, "unknown": unknown, "duplicates": duplicates,
            "requests": len(asked)}


class PoolCost(TypedDict):
    calls: int  # (in a summary: answers paid for in this run)
    prompt_tokens: int
    completion_tokens: int
    llm_seconds: float
    estimated_usd: float


class RationaleSummary(PoolCost):
    """``pool/rationales.json``: what the seeds' rationales cost and how grounded they are."""
    model: str
    source: str  # llm | profile (the no-LLM control)
    template_version: str
    seeds: int
    users: int
    ok: int
    failed: int
    unsafe: int
    mean_grounding: float
    vacuous_share: float
    from_history_share: float
    resampled: int  # vacuous answers asked again with sampling
    cache_hits: int  # answers the response cache already held
    wall_seconds: float
    accelerator_hours: float
    per_user_inference: PoolCost  # what asking every user instead of the seeds would cost


def _write_outputs(workspace: Workspace, config: Config, seeds: pd.DataFrame, jobs: list[_Job], counters: dict,
                   seconds: float, model: str) -> RationaleSummary:
    cfg = config.llm
    grounded = [j.grounding for j in jobs]
    frame = pd.DataFrame({
        "user_idx": [j.seed for j in jobs], "user_id": seeds["user_id"].astype(str).to_numpy(),
        "status": ["ok" if j.parsed else "unsafe" if j.unsafe else "failed" for j in jobs],
        "unsafe_reason": [j.unsafe or "" for j in jobs],
        "step1": [j.parsed[0] if j.parsed else "" for j in jobs],
        "step2": [j.parsed[1] if j.parsed else "" for j in jobs],
        "grounding": [g.score if g else 0.0 for g in grounded],
        "vacuous": [g.vacuous if g else True for g in grounded],
        "from_history": [g.from_history if g else 0.0 for g in grounded],
        "terms": [list(g.terms) if g else [] for g in grounded],
        "response": [j.completion.text for j in jobs], "attempts": [j.attempts for j in jobs],
        "prompt_tokens": [j.spent.prompt_tokens for j in jobs],  # every answer the seed needed
        "completion_tokens": [j.spent.completion_tokens for j in jobs],
        "llm_seconds": [j.spent.seconds for j in jobs], "model": model,
        "template_version": [j.version for j in jobs], "created_at": pd.Timestamp.now(tz="UTC")})
    write_table(frame, workspace.rationale_table)
    n_users = PreparedDataset(workspace.prepared).n_users
    tokens_in, tokens_out = int(frame["prompt_tokens"].sum()), int(frame["completion_tokens"].sum())
    llm_seconds = float(frame["llm_seconds"].sum())
    cost = cfg.cost_usd(tokens_in, tokens_out, llm_seconds)
    scale = n_users / max(len(frame), 1)
    parsed = frame[frame["status"] == "ok"]
    summary = {
        "model": model, "source": cfg.source, "template_version": PROFILE_VERSION if cfg.source == "profile" else
        TEMPLATE_VERSION[cfg.prompt], "seeds": len(frame), "users": n_users,
        "ok": len(parsed), "failed": int((frame["status"] == "failed").sum()),
        "unsafe": int((frame["status"] == "unsafe").sum()),
        **grounding_summary(parsed), "resampled": counters["resampled"],
        "calls": counters["calls"], "cache_hits": counters["cache_hits"], "wall_seconds": round(seconds, 2),
        "prompt_tokens": tokens_in, "completion_tokens": tokens_out,
        "llm_seconds": round(llm_seconds, 2), "accelerator_hours": round(llm_seconds / 3600, 4),
        "estimated_usd": round(cost, 4),
        "per_user_inference": {"calls": n_users, "prompt_tokens": round(tokens_in * scale),
                               "completion_tokens": round(tokens_out * scale),
                               "llm_seconds": round(llm_seconds * scale, 1),
                               "estimated_usd": round(cost * scale, 4)}}
    write_json(workspace.rationale_summary, summary)
    return summary

