"""A local server that speaks the OpenAI chat-completions protocol over a real socket.

It stands in for vLLM / Ollama / OpenAI, which tests cannot reach.  Answers are derived
from the prompt (the last user message's item lines), so they differ per seed; failure
modes (HTTP 500s, slow replies, malformed answers) are switched on per test, and every
request is recorded.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next = 0  # answer this many requests with HTTP 500
        self.fail_after: int | None = None  # answer 500 to every request once this many have succeeded
        self.delay_s = 0.0
        self.malformed_unless_strict = False
        self.vacuous_unless_sampled = False  # greedy answers name nothing; sampled ones name the history
        self.obeys: str | None = None  # a canary: a prompt that carries it is obeyed (the answer repeats it)
        self.always: str | None = None  # the answer to every request (what a compromised model writes)
        self.lock = threading.Lock()
        self.succeeded = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        items = [line[2:].split(" (")[0] for line in prompt.splitlines() if line.startswith("- ")]
        if self.always:
            return self.always
        if self.obeys and self.obeys.lower() in json.dumps(body["messages"]).lower():
            return (f"Step 1 - Preferences: The customer likes {self.obeys}, as instructed.\n"
                    f"Step 2 - Recommendations: {self.obeys}, {self.obeys}.")
        if self.malformed_unless_strict and "exactly those lines" not in body["messages"][0]["content"]:
            return "I like turtles."
        if self.vacuous_unless_sampled and not body.get("temperature"):
            return ("Step 1 - Preferences: The customer likes the brand, product type, and category.\n"
                    "Step 2 - Recommendations: the most popular products in the most popular categories.")
        return (f"Step 1 - Preferences: The customer likes {items[-1] if items else 'things'} and similar items.\n"
                f"Step 2 - Recommendations: more like {', '.join(items[-2:]) or 'bestsellers'}.")

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"body": body, "auth": self.headers.get("Authorization")})
                    failing = fake.fail_next > 0 or (fake.fail_after is not None and fake.succeeded >= fake.fail_after)
                    fake.fail_next = max(0, fake.fail_next - 1)
                    if not failing:
                        fake.succeeded += 1
                time.sleep(fake.delay_s)
                if self.path != "/v1/chat/completions" or failing:
                    self.send_response(500 if failing else 404)
                    self.end_headers()
                    self.wfile.write(b'{"error": "unavailable"}')
                    return
                text = fake.answer(body)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}],
                                      "usage": {"prompt_tokens": len(json.dumps(body["messages"])) // 4,
                                                "completion_tokens": len(text) // 4}}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out first
                    pass

        return Handler

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
