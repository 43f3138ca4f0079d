"""The platform's Feast objects at module level, for the Feast CLI: ``feast plan``, ``apply``, ``ui``,
``materialize-incremental`` from this folder see exactly what ``reland features apply`` registers
for the workspace that ``RELAND_WORKSPACE`` names (``feature_store.yaml`` reads the same variable).

``RELAND_FEATURE_TTL_DAYS`` matches a configured ``features.ttl_days`` other than the default.
"""
import os

from feast import Project

from components.config import FeaturesConfig
from components.workspace import Workspace
from feature_repo.repo import PROJECT, definitions


def _workspace() -> Workspace:
    root = os.environ.get("RELAND_WORKSPACE")
    if not root or not os.path.isdir(root):
        raise SystemExit(f"RELAND_WORKSPACE={root or '(unset)'}: set it to a workspace folder that "
                         "'reland features apply' has run in, e.g. export RELAND_WORKSPACE=$PWD/../workspace")
    return Workspace(root)


project = Project(name=PROJECT)
_objects = {obj.name: obj for obj in definitions(
    _workspace(), int(os.environ.get("RELAND_FEATURE_TTL_DAYS", FeaturesConfig().ttl_days)))}
user = _objects["user"]
item = _objects["item"]
user_rationale_embedding = _objects["user_rationale_embedding"]
user_behaviour_embedding = _objects.get("user_behaviour_embedding")  # once the encoder's table exists
item_text_embedding = _objects.get("item_text_embedding")  # once the item text table exists
ranker = _objects["ranker"]
ranker_items = _objects.get("ranker_items")
pool = _objects.get("pool")  # the seed-keyed layout (the default): seeds' embeddings stored once
seed = _objects.get("seed")
seed_rationale_embedding = _objects.get("seed_rationale_embedding")
ranker_seeds = _objects.get("ranker_seeds")
