"""Helpers for benchmark scripts: run a measured child process, record figures to a file."""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def run_measured(code: str, *args: str) -> dict:
    """Run ``python -c code args`` in a child; return its wall seconds, peak RSS (MiB) and JSON stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read()
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark child failed with status {status}")
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": usage.ru_maxrss / 1024,
            "result": json.loads(output.strip().splitlines()[-1])}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def redis_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server of the benchmark's own on a free loopback port, persisting nothing; (process, host:port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    return server, f"127.0.0.1:{port}"
