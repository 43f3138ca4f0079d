"""Steps ``apply_features`` and ``materialise_features``, and online lookups for ranking services.

Materialisation is incremental (Feast keeps each view's last materialised time) and
idempotent (re-running writes the same rows); ranking services call
``get_online_features`` through the ``ranker`` feature service, as :func:`online_features` does.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from components.config import Config, FeaturesConfig
from components.workspace import Workspace, read_json


def apply_features(config: Config, workspace: Workspace, progress: bool = True) -> list[str]:
    """Register the platform's entities, feature views and feature service in the workspace registry."""
    from feature_repo import apply_definitions, definitions, feature_store

    if not workspace.user_rationales.exists():
        raise FileNotFoundError(f"{workspace.user_rationales}: nothing to serve; run 'reland pool retrieve' first")
    objects = definitions(workspace, config.features.ttl_days)
    apply_definitions(feature_store(workspace, config.features), objects)
    return [obj.name for obj in objects]


def validate_features(config: Config, workspace: Workspace) -> dict:
    """The GX gate on ``user_rationale_embedding``: raises ``ValidationFailed`` before anything is served."""
    from components.pool import current_pool, load_pool
    from validation.gate import run_gate
    from validation.suites import rationale_chunks, rationale_suite, recall_suite

    pool = current_pool(workspace)
    seeds = [str(s) for s in load_pool(pool)["seed_user_id"]]
    retrieval = read_json(workspace.retrieval_summary) if workspace.retrieval_summary.exists() else {}
    if retrieval.get("recall_at_1") is not None:  # an approximate index: its sampled recall, before any row
        run_gate("retrieval_recall", recall_suite(config.pool.min_recall),
                 [pd.DataFrame({"recall_at_1": [retrieval["recall_at_1"]], "index": [retrieval["index"]]})], workspace)
    return run_gate("user_rationale_embedding", rationale_suite(seeds, pool.version, pool.rationale_dim),
                    rationale_chunks(workspace.user_rationales), workspace)


def materialise_features(config: Config, workspace: Workspace, progress: bool = True,
                         end: datetime | None = None) -> dict:
    """Validate, then copy feature rows newer than the last materialisation into the online store.

    A failed validation raises before Feast is touched: the online store keeps serving the
    previous good features.
    """
    from feature_repo import feature_store

    validation = validate_features(config, workspace)
    store = feature_store(workspace, config.features)
    end = end or datetime.now(timezone.utc)
    store.materialize_incremental(end_date=end)
    return {"views": [view.name for view in store.list_feature_views()], "end": end.isoformat(),
            "validated_rows": validation["rows"]}


class OnlineFeatures:
    """A ranking service's handle on the online store: opened once, then one lookup per request."""

    def __init__(self, workspace: Workspace, features: FeaturesConfig | None = None):
        from feast.errors import FeatureServiceNotFoundException

        from feature_repo import FEATURE_SERVICE, feature_store

        self.store = feature_store(workspace, features)
        try:
            self.service = self.store.get_feature_service(FEATURE_SERVICE)
        except FeatureServiceNotFoundException:
            raise ValueError(f"feature service '{FEATURE_SERVICE}' is not registered in {workspace.root / 'features'}; "
                             "run 'reland features apply' and 'reland features materialise'") from None

    def get(self, user_ids: list[str], timestamps: bool = False) -> dict[str, list]:
        """The ranker's features for ``user_ids``; unknown users come back as None.  With ``timestamps``,
        each feature's event time too (``<feature>__ts``, seconds since the epoch)."""
        rows = [{"user_id": u} for u in user_ids]
        return self.store.get_online_features(features=self.service, entity_rows=rows).to_dict(
            include_event_timestamps=timestamps)


def online_features(workspace: Workspace, user_ids: list[str], features: FeaturesConfig | None = None) -> dict[str, list]:
    """One-off lookup of the ranker's features (opens the store; services keep an :class:`OnlineFeatures`)."""
    return OnlineFeatures(workspace, features).get(user_ids)
