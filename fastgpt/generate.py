"""Text generation: prefill the prompt once, then one cached forward per new token.

Only the last position's logits are computed while generating, and the KV cache is
allocated once per call for exactly prompt + max_new_tokens positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

from .model import Model

if TYPE_CHECKING:
    from .tokenizer import Tokenizer


class Generator:
    def __init__(self, model: Model, tokenizer: Tokenizer | None = None):
        self.model = model
        self.tokenizer = tokenizer

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this Generator has no tokenizer; pass one, or use generate_ids with token ids")
        return self.tokenizer

    def _check_lengths(self, n_prompt: int, max_new_tokens: int) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
        if n_prompt == 0:
            raise ValueError("the prompt is empty: give at least one token")
        n_ctx = self.model.config.n_positions
        if n_prompt + max_new_tokens > n_ctx:
            raise ValueError(
                f"prompt of {n_prompt} tokens + max_new_tokens={max_new_tokens} exceeds the model's "
                f"context of n_positions={n_ctx}"
            )

    def iter_ids(self, prompt_ids, max_new_tokens: int = 32, eos_token_id=None) -> Iterator[int]:
        """Yield new token ids one at a time (greedy), stopping at eos or after max_new_tokens."""
        ids = [int(i) for i in prompt_ids]
        self._check_lengths(len(ids), max_new_tokens)
        if eos_token_id is None:
            eos_token_id = self.model.config.eos_token_id
        if max_new_tokens == 0:
            return
        cache = self.model.new_cache(batch_size=1, max_len=len(ids) + max_new_tokens)
        logits = self.model.forward(np.asarray(ids, np.int64), cache=cache, last_only=True)
        token_buf = np.empty(1, np.int64)
        for step in range(max_new_tokens):
            token = int(np.argmax(logits))
            yield token
            if token == eos_token_id or step == max_new_tokens - 1:
                return
            token_buf[0] = token
            logits = self.model.forward(token_buf, cache=cache, last_only=True)

    def generate_ids(self, prompt_ids, max_new_tokens: int = 32, eos_token_id=None) -> list[int]:
        """The new token ids only."""
        return list(self.iter_ids(prompt_ids, max_new_tokens, eos_token_id))

    def stream(self, prompt: str, max_new_tokens: int = 32) -> Iterator[str]:
        """Yield the completion as text pieces, each complete UTF-8."""
        tok = self._require_tokenizer()
        decoder = tok.decoder()
        for token in self.iter_ids(tok.encode(prompt), max_new_tokens):
            if token == tok.eos_token_id:
                break
            piece = decoder.push(token)
            if piece:
                yield piece
        tail = decoder.flush()
        if tail:
            yield tail

    def generate(self, prompt: str, max_new_tokens: int = 32) -> str:
        """The completion text only (the prompt is not repeated)."""
        return "".join(self.stream(prompt, max_new_tokens))
