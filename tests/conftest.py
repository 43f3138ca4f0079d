"""Shared fixtures: small datasets written in every supported format, and the real-data switch."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DGLBACKEND", "pytorch")

SHARED_DATA = Path(os.environ.get("RELAND_DATA_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data"))


KINDS = ("unit", "integration", "e2e")  # each test's kind is its folder


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"real datasets not found at {SHARED_DATA}")
    for item in items:
        kind = Path(item.fspath).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        if "realdata" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


def random_log(n_users: int = 30, n_items: int = 25, seed: int = 0) -> pd.DataFrame:
    """A small log where every user has 4-12 distinct items and timestamps are shuffled in the file."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, rng.integers(4, 13), replace=False)
        times = np.sort(rng.choice(10_000, len(items), replace=False)) + 1_600_000_000
        rows += [(f"U{u}", f"I{i}", int(t)) for i, t in zip(items, times)]
    log = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    used = sorted(log["item_id"].unique(), key=lambda s: int(s[1:]))
    log.attrs["items"] = used
    return log.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def write_recbole(folder: Path, log: pd.DataFrame, name: str = "toy") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    inter = log.rename(columns={"user_id": "user_id:token", "item_id": "item_id:token", "timestamp": "timestamp:float"})
    inter.insert(2, "rating:float", 4)
    inter.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    items = pd.DataFrame({"item_id:token": log.attrs["items"],
                          "movie_title:token_seq": [f"Movie &amp; {i}" for i in log.attrs["items"]],
                          "release_year:token": 1999, "class:token_seq": "Comedy Drama"})
    items.to_csv(folder / f"{name}.item", sep="\t", index=False)
    users = pd.DataFrame({"user_id:token": log["user_id"].unique(), "age:token": 30})
    users.to_csv(folder / f"{name}.user", sep="\t", index=False)
    return folder


@pytest.fixture
def recbole_folder(tmp_path) -> Path:
    return write_recbole(tmp_path / "toy", random_log())


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of our own on a free loopback port (.ci/run installs the Debian package)."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server missing in CI: .ci/run must install it")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)
