"""Feast objects for the platform's features, and the store that serves them."""
from __future__ import annotations

import contextlib
import io
import logging
from datetime import timedelta

import pyarrow.parquet as pq

from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, Project, ValueType
from feast.repo_config import RepoConfig
from feast.types import Array, Bool, Float32, Int64, String

from components.config import FeaturesConfig
from components.workspace import FEAST_ROOT_MARK, FEATURES, Workspace

PROJECT = "reland"  # as feature_store.yaml names it
FEATURE_SERVICE = "ranker"
SEED_SERVICE = "ranker_seeds"  # the seed-keyed layout's second lookup
RATIONALE_VIEW = "user_rationale_embedding"
SEED_VIEW = "seed_rationale_embedding"
ENTITY_KEYS = {RATIONALE_VIEW: ("user_id",), "user_behaviour_embedding": ("user_id",),
               "item_text_embedding": ("item_id",), SEED_VIEW: ("pool_version", "seed_user_id")}
logging.getLogger("feast").setLevel(logging.WARNING)


def feature_store(workspace: Workspace, features: FeaturesConfig | None = None) -> FeatureStore:
    """The workspace's Feast store: local provider, file offline store, SQLite (default) or Redis online store."""
    features = features or FeaturesConfig()
    folder = workspace.dir(FEATURES)
    online = ({"type": "redis", "connection_string": features.redis_url} if features.online_store == "redis"
              else {"type": "sqlite", "path": str(folder / "online_store.db")})
    config = RepoConfig(project=PROJECT, provider="local", registry=str(workspace.feast_registry), online_store=online,
                        offline_store={"type": "file"}, entity_key_serialization_version=3, repo_path=str(folder))
    store = FeatureStore(config=config)
    relocate_sources(store, workspace)
    return store


def apply_definitions(store: FeatureStore, objects: list) -> str:
    """Register ``objects`` as the repo's whole state, the way ``feast apply`` does (objects no
    longer defined are removed; the online tables are recorded), so ``feast plan`` from
    ``feature_repo/`` finds nothing to change.  Returns Feast's diff text."""
    from feast.repo_contents import RepoContents
    from feast.repo_operations import apply_total_with_repo_instance

    kinds = {kind: [o for o in objects if isinstance(o, cls)]
             for kind, cls in (("entities", Entity), ("feature_views", FeatureView), ("feature_services", FeatureService))}
    repo = RepoContents(projects=[Project(name=store.project)], data_sources=[v.batch_source for v in kinds["feature_views"]],
                        on_demand_feature_views=[], stream_feature_views=[], permissions=[], **kinds)
    with contextlib.redirect_stdout(io.StringIO()) as diff:
        apply_total_with_repo_instance(store, store.project, store.registry, repo, skip_source_validation=False)
    return diff.getvalue()


def relocate_sources(store: FeatureStore, workspace: Workspace) -> bool:
    """Point the registered file sources and online tables at this workspace if it was moved or
    copied since they were registered: Feast keeps both paths absolute (as ``feast apply`` from
    ``feature_repo/`` writes them), and a copy must never read the original's.  True if anything moved."""
    mark = workspace.file(FEAST_ROOT_MARK)
    old, new = (mark.read_text() if mark.exists() else None), str(workspace.root)
    views = store.list_feature_views() if old and old != new and workspace.feast_registry.exists() else []
    for view in views:
        view.batch_source.file_options.uri = view.batch_source.path.replace(old + "/", new + "/", 1)
    if views:
        from feast.infra.infra_object import Infra

        store.registry.update_infra(Infra(), store.project)  # it names the old online store; apply records the new
        apply_definitions(store, [*store.list_entities(), *views, *store.list_feature_services()])
    if old != new:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(new)
    return bool(views)


def seed_keyed(workspace: Workspace) -> bool:
    """Whether the workspace's retrieval table is the seed-keyed layout (no embedding per user)."""
    table = workspace.user_rationales
    return table.exists() and "rationale_embedding" not in pq.read_schema(table).names


def definitions(workspace: Workspace, ttl_days: int = 30) -> list:
    """Entities, the feature views over the workspace's tables that exist, and the feature services.

    ``user_rationale_embedding`` (retrieval, Eq. 3) always: each user's assigned seed, similarity
    and pool version, with the rationale embedding itself in the per-user layout; in the
    seed-keyed layout the embedding is ``seed_rationale_embedding``'s, one row per (pool version,
    seed), served by the ``ranker_seeds`` service.  ``user_behaviour_embedding`` (the encoder's
    M) and ``item_text_embedding`` (MiniLM over item text) when their tables exist.  The
    ``ranker`` service holds the user views; ``ranker_items`` the item view.
    """
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
                  description="a user of the recommender (raw id)")
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="a catalogue item (raw id)")
    ttl = timedelta(days=ttl_days)

    def view(name: str, path, entities: list[Entity], fields: list[Field], description: str) -> FeatureView:
        # Absolute, as the Feast CLI resolves them from feature_repo/; relocate_sources follows a moved workspace.
        source = FileSource(name=f"{name}_source", path=str(path), timestamp_field="event_timestamp")
        return FeatureView(name=name, entities=entities, ttl=ttl, source=source, online=True, schema=fields,
                           description=description)

    embedding = [Field(name="rationale_embedding", dtype=Array(Float32))]
    assignment = [Field(name="seed_user_id", dtype=String), Field(name="similarity", dtype=Float32),
                  Field(name="pool_version", dtype=Int64)]
    shared = seed_keyed(workspace)
    user_views = [view(RATIONALE_VIEW, workspace.user_rationales, [user], assignment if shared else embedding + assignment,
                       "The user's most similar seed (RELAND Eq. 3)" + (
                           "; its rationale embedding is seed_rationale_embedding's" if shared else
                           " and the embedding of that seed's Step-2 rationale"))]
    behaviour = workspace.user_vectors
    if behaviour.exists():
        user_views.append(view("user_behaviour_embedding", behaviour, [user],
                               [Field(name="vector", dtype=Array(Float32)), Field(name="cold", dtype=Bool)],
                               "The behaviour encoder's user vector (M, Eq. 1)"))
    objects = [user, item, *user_views,
               FeatureService(name=FEATURE_SERVICE, features=user_views, description="user features the ranker pulls")]
    if shared:
        pool = Entity(name="pool", join_keys=["pool_version"], value_type=ValueType.INT64,
                      description="a version of the LLM reasoning pool")
        seed = Entity(name="seed", join_keys=["seed_user_id"], value_type=ValueType.STRING,
                      description="a seed user of the pool (raw id)")
        seeds = view(SEED_VIEW, workspace.seed_rationales, [pool, seed], embedding,
                     "Embedding of a seed's Step-2 rationale, stored once for every user assigned to it")
        objects += [pool, seed, seeds, FeatureService(name=SEED_SERVICE, features=[seeds],
                                                      description="the rationale embedding of a user's assigned seed")]
    items = workspace.item_text
    if items.exists():
        item_view = view("item_text_embedding", items, [item], [Field(name="text_embedding", dtype=Array(Float32))],
                         "MiniLM embedding of the item's title, brand and categories")
        objects += [item_view, FeatureService(name=f"{FEATURE_SERVICE}_items", features=[item_view],
                                              description="item features for the ranker's candidates")]
    return objects
