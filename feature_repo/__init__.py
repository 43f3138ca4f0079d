"""The Feast project: entities, feature views and the ranker's feature service.

Definitions are built per workspace (:func:`definitions`), because the offline sources are
the workspace's Parquet tables; :func:`feature_store` opens the store whose registry and
SQLite online store live in ``workspace/features``.  The folder is also a standard Feast repo
(``feature_store.yaml``, ``features.py``) for the Feast CLI.  May import: ``components`` (paths).
"""
from feature_repo.repo import (ENTITY_KEYS, FEATURE_SERVICE, RATIONALE_VIEW, SEED_SERVICE, SEED_VIEW, apply_definitions,
                               definitions, feature_store, seed_keyed)

__all__ = ["ENTITY_KEYS", "FEATURE_SERVICE", "RATIONALE_VIEW", "SEED_SERVICE", "SEED_VIEW", "apply_definitions",
           "definitions", "feature_store", "seed_keyed"]
