"""A persistent response cache for LLM calls: resume after a crash, never pay twice.

Keyed by sha256(model, template version, prompt).  Each batch's answers are committed
as soon as they arrive (SQLite, WAL), so a run killed mid-generation loses at most the
batch in flight, and a re-run with the same inputs makes no call at all.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from models.llm.base import Completion


def cache_key(model: str, template_version: str, messages: list[dict]) -> str:
    payload = json.dumps([model, template_version, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS responses (
            key TEXT PRIMARY KEY, model TEXT, template_version TEXT, prompt TEXT, response TEXT,
            prompt_tokens INTEGER, completion_tokens INTEGER, seconds REAL, created_at REAL)""")

    def get(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start: start + 500]
            rows = self.db.execute(f"SELECT key, response, prompt_tokens, completion_tokens, seconds FROM responses "
                                   f"WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update({k: Completion(r, pt, ct, s) for k, r, pt, ct, s in rows})
        return found

    def put(self, entries: list[tuple[str, str, str, list[dict], Completion]]) -> None:
        """Store (key, model, template version, messages, completion) rows and commit."""
        now = time.time()
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO responses VALUES (?,?,?,?,?,?,?,?,?)", [
                (key, model, version, json.dumps(messages, ensure_ascii=False), c.text, c.prompt_tokens,
                 c.completion_tokens, c.seconds, now) for key, model, version, messages, c in entries])

    def close(self) -> None:
        self.db.close()
