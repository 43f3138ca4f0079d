"""Ranking-service latency and throughput on loopback: one request with 100 candidates, then concurrent clients.

    python benchmarks/bench_serving.py -w WORKSPACE [--preset NAME] [--requests 500]
                                       [--concurrency 8] [--seconds 15] [--candidates 100]

Starts ``reland serve`` on the workspace (its registered ranker and Feast online store) in a
child process, waits for ``/ready``, measures sequential single-request latency (p50/p99),
then a bounded load run with concurrent keep-alive clients (requests/s and latency under
load).  Users are drawn from the workspace, candidates at random from the catalogue.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from components.data.tables import PreparedDataset  # noqa: E402
from components.workspace import Workspace  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the service exited before it was ready")
        try:
            response = httpx.get(f"{url}/ready", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service was not ready in time")


def requests_for(workspace: Path, n: int, candidates: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    data = PreparedDataset(Workspace(workspace).prepared)
    users = data.users()["user_id"].astype(str).to_numpy()
    items = data.items()["item_id"].astype(str).to_numpy()
    return [{"user_id": str(rng.choice(users)), "candidates": rng.choice(items, min(candidates, len(items)),
                                                                          replace=False).tolist(), "k": 10}
            for _ in range(n)]


def percentiles(latencies: list[float]) -> dict:
    values = np.array(latencies) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 2), "p99_ms": round(float(np.percentile(values, 99)), 2),
            "mean_ms": round(float(values.mean()), 2)}


def load(url: str, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    lock, stop = threading.Lock(), time.time() + seconds

    def client(offset: int) -> None:
        with httpx.Client(timeout=30) as http:
            i = offset
            while time.time() < stop:
                started = time.perf_counter()
                http.post(f"{url}/rank", json=bodies[i % len(bodies)]).raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - started)
                i += concurrency

    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 1),
            **percentiles(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workspace", required=True, type=Path)
    parser.add_argument("--preset", default=None)
    parser.add_argument("--requests", type=int, default=500, help="sequential requests for the latency figures")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15, help="duration of the load run")
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args()
    port = free_port()
    command = [sys.executable, "-m", "pipelines.cli", "-q", "-w", str(args.workspace)]
    command += ["--preset", args.preset] if args.preset else []
    server = subprocess.Popen(command + ["serve", "--port", str(port)], cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, server)
        bodies = requests_for(args.workspace, max(args.requests, 200), args.candidates)
        latencies = []
        with httpx.Client(timeout=30) as http:
            for body in bodies[:20]:  # warm-up
                http.post(f"{url}/rank", json=body).raise_for_status()
            for body in bodies[: args.requests]:
                started = time.perf_counter()
                http.post(f"{url}/rank", json=body).raise_for_status()
                latencies.append(time.perf_counter() - started)
        single = {"requests": args.requests, "candidates": args.candidates, **percentiles(latencies)}
        loaded = load(url, bodies, args.concurrency, args.seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"benchmark": "serving", "workspace": str(args.workspace), "model": ready["model"],
              "users": ready["users"], "items": ready["items"], "single": single, "load": loaded}
    print(f"model {ready['model']} ({ready['users']:,} users, {ready['items']:,} items)")
    print(f"one request, {args.candidates} candidates: p50 {single['p50_ms']} ms, p99 {single['p99_ms']} ms")
    print(f"{args.concurrency} concurrent clients for {args.seconds:g}s: {loaded['requests_per_s']} requests/s, "
          f"p50 {loaded['p50_ms']} ms, p99 {loaded['p99_ms']} ms")
    print(f"written to {save('serving', result)}")


if __name__ == "__main__":
    main()
