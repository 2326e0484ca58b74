"""Step-cost doubles for simulator tests: simple enough that expected timings can be written down."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LinearCost:
    """step = a + b * (prefill tokens + decode sequences) + c * decode KV tokens (numpy-friendly)."""

    a: float = 0.010
    b: float = 1e-5
    c: float = 0.0

    def step_time_s(
        self, prefill_tokens: int, prefill_attn_pairs: float, decode_seqs: int, decode_kv_tokens: int
    ) -> float:
        return self.a + self.b * (prefill_tokens + decode_seqs) + self.c * decode_kv_tokens


@dataclass(frozen=True)
class ScalarOnlyCost:
    """The same cost, but refusing arrays (forces the engine's one-step-at-a-time path)."""

    inner: LinearCost

    def step_time_s(
        self, prefill_tokens: int, prefill_attn_pairs: float, decode_seqs: int, decode_kv_tokens: int
    ) -> float:
        if isinstance(decode_kv_tokens, np.ndarray):
            raise TypeError("scalars only")
        return float(
            self.inner.step_time_s(prefill_tokens, prefill_attn_pairs, decode_seqs, decode_kv_tokens)
        )
