"""The interface every LLM backend implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float  # wall time attributed to this prompt (a batch's time shared by its prompts)


class LLMBackend(ABC):
    """Answers chat conversations; ``name`` identifies the model in caches and reports."""

    name: str

    @abstractmethod
    def complete(self, conversations: list[list[dict]], max_new_tokens: int, users: list[str] | None = None,
                 on_completion: Callable[[int, Completion], None] | None = None,
                 temperature: float = 0.0) -> list[Completion]:
        """One completion per conversation, in order; ``users`` are pseudonyms for the provider's logs.

        ``temperature`` 0 decodes greedily; above 0 samples (reproducibly where the backend can).

        ``on_completion(index, completion)`` is called as each answer arrives, so a caller can
        persist it before a later failure in the same batch.
        """
