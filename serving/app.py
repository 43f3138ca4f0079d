"""``create_app``: the ranking service over one workspace (Feast store, pool snapshots, prepared catalogue).

Endpoints: ``POST /rank``, ``GET /health`` (the process answers), ``GET /ready`` (model and
feature store loaded).  A user without online features (unknown, or never materialised) is
ranked by item popularity and marked ``cold_start``; candidate ids the catalogue does not
know are returned in ``unknown_items`` rather than failing the request.
"""
from __future__ import annotations

import contextlib
import functools
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated

import numpy as np
import pyarrow.parquet as pq
import torch
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StringConstraints, field_validator

from components.config import Config
from components.data.tables import SPLIT_COLUMN, VALID, PreparedDataset
from components.features import OnlineFeatures
from components.tracking import served_model_uri
from components.workspace import Workspace
from models.recommenders import Recommender, serving_rows


MAX_ID_CHARS = 256
MAX_CANDIDATES = 10_000
MAX_BODY_BYTES = 4 * 1024 * 1024  # room for MAX_CANDIDATES ids of MAX_ID_CHARS/2 characters, JSON-quoted
RawId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]


class RankRequest(BaseModel):
    user_id: RawId = Field(..., description="the user's raw id")
    candidates: list[RawId] = Field(..., min_length=1, max_length=MAX_CANDIDATES,
                                    description="raw item ids to rank, each once (a repeated id is rejected with 422)")
    k: int = Field(10, ge=1, le=1000, description="items to return")

    @field_validator("candidates")
    @classmethod
    def _each_candidate_once(cls, candidates: list[str]) -> list[str]:
        repeated = [item for item, times in Counter(candidates).items() if times > 1]
        if repeated:
            raise ValueError(f"candidates repeat {len(repeated)} id(s), first {repeated[0]!r}: send each id once")
        return candidates


class RankedItem(BaseModel):
    item_id: str
    score: float


class RankResponse(BaseModel):
    user_id: str
    items: list[RankedItem]
    cold_start: bool = Field(description="no online features for this user: ranked by popularity")
    explanation: str | None = Field(None, description="Step 1 of the rationale of the user's most similar seed; "
                                                      "only from a model that fuses rationales")
    seed_user_id: str | None = None
    similarity: float | None = None
    pool_version: int | None = None
    feature_timestamp: datetime | None = Field(None, description="event time of the user's rationale feature row")
    feature_age_s: float | None = Field(None, description="seconds since that event time")
    unknown_items: list[str] = []
    model: str = Field(description="the MLflow model URI the service loaded")
    model_name: str | None = None
    model_version: str | None = None
    model_alias: str | None = None
    latency_ms: float


@dataclass
class Catalogue:
    """Ids to indices, each user's recent items (the sequential models' input) and item popularity."""

    items: dict[str, int]
    users: dict[str, int]
    recent: list[np.ndarray]
    popularity: np.ndarray

    @classmethod
    def load(cls, data: PreparedDataset, split_column: str) -> "Catalogue":
        items = data.items()
        users = data.users()
        log = data.interactions(["user_idx", "item_idx", split_column])
        log = log[log[split_column] <= VALID]  # what the model may know of the user: training and validation
        grouped = log.groupby("user_idx")["item_idx"].apply(lambda s: s.to_numpy())
        recent = [np.empty(0, np.int64)] * data.n_users
        for user, history in grouped.items():
            recent[int(user)] = history
        popularity = np.bincount(log["item_idx"], minlength=data.n_items).astype(np.float32)
        return cls(dict(zip(items["item_id"].astype(str), items["item_idx"])),
                   dict(zip(users["user_id"].astype(str), users["user_idx"])), recent, popularity)


class Ranker:
    """The registered model plus what it needs at request time."""

    def __init__(self, workspace: Workspace, config: Config, model_uri: str):
        import mlflow

        from components.tracking import open_tracking
        open_tracking(workspace)
        self.model: Recommender = mlflow.pytorch.load_model(model_uri).eval()
        self.model_uri = model_uri
        self.version = registry_version(model_uri)
        self.catalogue = Catalogue.load(PreparedDataset(workspace.prepared), SPLIT_COLUMN[self.model.family])
        self.features = OnlineFeatures(workspace, config.features)
        self.features.warm()  # the pool's seed embeddings, so a request is one lookup
        self.workspace = workspace

    @functools.lru_cache(maxsize=16)
    def explanations(self, version: int) -> dict[str, str]:
        path = self.workspace.pool_snapshot(version)
        if not path.exists() or "step1" not in pq.read_schema(path).names:
            return {}
        table = pq.read_table(path, columns=["seed_user_id", "step1"]).to_pandas()
        return dict(zip(table["seed_user_id"].astype(str), table["step1"]))

    @torch.no_grad()
    def rank(self, request: RankRequest) -> RankResponse:
        started = time.perf_counter()
        known = [c for c in request.candidates if c in self.catalogue.items]
        unknown = [c for c in request.candidates if c not in self.catalogue.items]
        indices = np.array([self.catalogue.items[c] for c in known], np.int64)
        row = {k: v[0] for k, v in self.features.get([request.user_id], timestamps=True).items()}
        user = self.catalogue.users.get(request.user_id)
        cold = user is None or row.get("rationale_embedding") is None
        if cold:
            scores = self.catalogue.popularity[indices]
        else:
            recent = self.catalogue.recent[user][-self.model.max_len:] + 1
            sequence = torch.zeros(1, self.model.max_len, dtype=torch.long)
            sequence[0, :len(recent)] = torch.from_numpy(recent)
            rationale = torch.tensor([row["rationale_embedding"]]) if self.model.fusion is not None else None
            scores = self.model(serving_rows(torch.tensor([user]), sequence, rationale))[0].numpy()[indices]
        order = np.argsort(-scores, kind="stable")[: request.k]
        version = None if cold else int(row["pool_version"])
        explained = not cold and self.model.fusion is not None
        stamp = None if cold else datetime.fromtimestamp(row["seed_user_id__ts"], timezone.utc)  # the assignment's time
        return RankResponse(
            user_id=request.user_id, items=[RankedItem(item_id=known[i], score=float(scores[i])) for i in order],
            cold_start=cold, explanation=self.explanations(version).get(str(row["seed_user_id"])) if explained else None,
            seed_user_id=None if cold else row["seed_user_id"], similarity=None if cold else float(row["similarity"]),
            pool_version=version, feature_timestamp=stamp,
            feature_age_s=None if cold else round((datetime.now(timezone.utc) - stamp).total_seconds(), 1),
            unknown_items=unknown, model=self.model_uri, **self.version,
            latency_ms=round((time.perf_counter() - started) * 1000, 3))


def registry_version(model_uri: str) -> dict[str, str | None]:
    """Registered name, version and alias behind a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI."""
    import mlflow

    reference = model_uri[len("models:/"):] if model_uri.startswith("models:/") else ""
    if "@" not in reference and "/" not in reference:  # a run's or a logged model's URI: not in the registry
        return {"model_name": None, "model_version": None, "model_alias": None}
    client = mlflow.MlflowClient()
    name, alias = reference.partition("@")[::2]
    if alias:
        return {"model_name": name, "model_version": str(client.get_model_version_by_alias(name, alias).version),
                "model_alias": alias}
    name, _, version = name.partition("/")
    if version == "latest":
        version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    return {"model_name": name, "model_version": str(version), "model_alias": None}


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413, whether it declares its length
    or streams in chunks; reading stops at the limit, so an oversized body never sits in memory."""

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        messages, seen = [], 0
        while True:  # the body, read up to the limit, then replayed to the app
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                return await self._refuse(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        detail = f"request body over {self.limit} bytes: send at most {MAX_CANDIDATES} candidates"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def create_app(workspace: Workspace, config: Config, model_uri: str | None = None) -> FastAPI:
    """The service; the model and the feature store load at startup (``/ready`` says when)."""
    state: dict[str, Ranker | str] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        try:
            state["ranker"] = Ranker(workspace, config, model_uri or served_model_uri(config))
        except Exception as exc:  # the service stays up and says why it is not ready
            state["error"] = f"{type(exc).__name__}: {exc}"
        yield

    app = FastAPI(title="RELAND ranking service", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Ranks candidate items for a user with the registered ranker and Feast features.")
    app.state.workspace = workspace
    app.add_middleware(BodyLimit)
    serve_swagger_offline(app)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict:
        if "ranker" not in state:
            raise HTTPException(503, detail=state.get("error", "loading"))
        ranker = state["ranker"]
        return {"status": "ready", "model": ranker.model_uri, **ranker.version, "items": len(ranker.catalogue.items),
                "users": len(ranker.catalogue.users)}

    @app.post("/rank", response_model=RankResponse)
    def rank(request: RankRequest) -> RankResponse:
        if "ranker" not in state:
            raise HTTPException(503, detail=state.get("error", "loading"))
        return state["ranker"].rank(request)

    return app


def serve_swagger_offline(app: FastAPI) -> None:
    """``/docs`` from the Swagger UI assets shipped in the swagger-ui-bundle package (FastAPI's
    self-hosting recipe), so the page works where no CDN is reachable."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API",
                                   swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/static/swagger/swagger-ui.css",
                                   swagger_favicon_url="/static/swagger/favicon-32x32.png")
