"""The online ranking service: FastAPI on uvicorn, features from Feast, the model from the MLflow registry.

``POST /rank`` scores a user's candidate items with the registered ranker, using the user's
``user_rationale_embedding`` row from Feast's online store (through the ``ranker`` feature
service) and returns the top k with the seed's Step-1 rationale as the explanation.
May import: ``components``, ``models``, ``feature_repo``; nothing imports it.
"""
from serving.app import create_app

__all__ = ["create_app"]
