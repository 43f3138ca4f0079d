"""Feast objects for the platform's features, and the store that serves them."""
from __future__ import annotations

import logging
from datetime import timedelta

from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Array, Float32, Int64, String

from components.config import FeaturesConfig
from components.retrieval import TABLE
from components.workspace import Workspace

FEATURE_SERVICE = "ranker"
RATIONALE_VIEW = "user_rationale_embedding"
logging.getLogger("feast").setLevel(logging.WARNING)


def feature_store(workspace: Workspace, features: FeaturesConfig | None = None) -> FeatureStore:
    """The workspace's Feast store: local provider, file offline store, SQLite (default) or Redis online store."""
    features = features or FeaturesConfig()
    folder = workspace.dir("features")
    online = ({"type": "redis", "connection_string": features.redis_url} if features.online_store == "redis"
              else {"type": "sqlite", "path": str(folder / "online_store.db")})
    config = RepoConfig(project="reland", provider="local", registry=str(folder / "registry.db"), online_store=online,
                        offline_store={"type": "file"}, entity_key_serialization_version=3, repo_path=str(folder))
    return FeatureStore(config=config)


def definitions(workspace: Workspace, ttl_days: int = 30) -> list:
    """Entity ``user``, the ``user_rationale_embedding`` view over the retrieval table, and the ranker's service."""
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
                  description="a user of the recommender (raw id)")
    source = FileSource(name=f"{RATIONALE_VIEW}_source", path=str(workspace.path("features", TABLE)),
                        timestamp_field="event_timestamp")
    rationale = FeatureView(
        name=RATIONALE_VIEW, entities=[user], ttl=timedelta(days=ttl_days), source=source, online=True,
        schema=[Field(name="rationale_embedding", dtype=Array(Float32)), Field(name="seed_user_id", dtype=String),
                Field(name="similarity", dtype=Float32), Field(name="pool_version", dtype=Int64)],
        description="Embedding of the Step-2 rationale of the user's most similar seed (RELAND Eq. 3)")
    service = FeatureService(name=FEATURE_SERVICE, features=[rationale],
                             description="features the online ranker pulls per request")
    return [user, rationale, service]
