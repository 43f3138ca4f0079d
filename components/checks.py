"""Steps ``validate_interactions`` and ``validate_behaviour_vectors``: GX gates after loading and embedding."""
from __future__ import annotations

import pandas as pd

from components.config import Config
from components.data.tables import INTERACTIONS, PreparedDataset
from components.workspace import Workspace
from validation.gate import GateReport


def validate_interactions(config: Config, workspace: Workspace, progress: bool = True) -> GateReport:
    """The staged interactions (as loaded) against the interactions suite."""
    from validation.gate import run_gate
    from validation.suites import interaction_chunks, interaction_suite

    staged = workspace.staged / INTERACTIONS
    if not staged.exists():
        raise FileNotFoundError(f"{staged}: nothing loaded yet; run 'reland data prepare' first")
    latest = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
    return run_gate("interactions", interaction_suite(latest), interaction_chunks(staged, config.data.chunk_rows),
                    workspace)


def validate_behaviour_vectors(config: Config, workspace: Workspace, progress: bool = True) -> GateReport:
    """``encoder/user_vectors.parquet`` against the behaviour-embedding suite, plus one row per user."""
    from validation.gate import ValidationFailed, run_gate
    from validation.suites import behaviour_chunks, behaviour_suite

    path = workspace.user_vectors
    if not path.exists():
        raise FileNotFoundError(f"{path}: no behaviour vectors yet; run 'reland encoder embed' first")
    summary = run_gate("behaviour_vectors", behaviour_suite(config.encoder.dim), behaviour_chunks(path), workspace)
    expected = PreparedDataset(workspace.prepared).n_users
    if summary["rows"] != expected:
        raise ValidationFailed(f"{path}: {summary['rows']:,} rows for {expected:,} users; every user needs one vector")
    return summary
