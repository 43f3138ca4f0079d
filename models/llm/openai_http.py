"""OpenAI-compatible chat completions over HTTP (vLLM, Ollama, OpenAI …).

Requests run concurrently; timeouts, HTTP 429 and 5xx are retried with exponential
backoff; other errors stop the run with the server's message.  The API key comes from
an environment variable and is never logged; users appear only as pseudonyms.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx

from models.llm.base import Completion, LLMBackend

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMServerError(RuntimeError):
    pass


class OpenAIBackend(LLMBackend):
    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 4,
                 timeout_s: float = 60.0, max_retries: int = 3, backoff_s: float = 0.5):
        if not base_url:
            raise ValueError("llm.base_url is required for the openai backend, e.g. http://localhost:8000/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name, self.concurrency = model, concurrency
        self.max_retries, self.backoff_s = max_retries, backoff_s
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout_s)

    def _one(self, messages: list[dict], max_new_tokens: int, user: str | None, temperature: float) -> Completion:
        if messages[-1]["role"] == "assistant":  # an answer prefill is a local-model aid; servers answer afresh
            messages = messages[:-1]
        body = {"model": self.name, "messages": messages, "max_tokens": max_new_tokens, "temperature": temperature}
        if user:
            body["user"] = user
        for attempt in range(self.max_retries + 1):
            started = time.perf_counter()
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TransportError as exc:  # timeouts, refused or dropped connections
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    payload = response.json()
                    usage = payload.get("usage") or {}
                    return Completion(text=payload["choices"][0]["message"]["content"] or "",
                                      prompt_tokens=int(usage.get("prompt_tokens", 0)),
                                      completion_tokens=int(usage.get("completion_tokens", 0)),
                                      seconds=time.perf_counter() - started)
                failure = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code not in RETRYABLE:
                    raise LLMServerError(f"{self.url}: {failure}")
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise LLMServerError(f"{self.url}: gave up after {self.max_retries + 1} attempts ({failure})")

    def complete(self, conversations, max_new_tokens, users=None, on_completion=None, temperature=0.0) -> list[Completion]:
        users = users or [None] * len(conversations)
        results: list[Completion | None] = [None] * len(conversations)
        with ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, c, max_new_tokens, u, temperature): i for i, (c, u) in enumerate(zip(conversations, users))}
            for future in as_completed(futures):  # a failure surfaces only after the others are kept
                index = futures[future]
                if future.exception() is None:
                    results[index] = future.result()
                    if on_completion:
                        on_completion(index, results[index])
            for future in futures:
                future.result()
        return results
