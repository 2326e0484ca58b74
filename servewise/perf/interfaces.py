"""Small interfaces between the performance-model parts (vidur-style pluggable pieces).

The simulator asks an ``IterationCost`` how long one engine step takes; the analytical model
implements it (``servewise.perf.analytical.IterationCostModel``), and tests may plug a fake.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class IterationCost(Protocol):
    """Latency of one continuous-batching iteration (one forward pass) of one replica.

    Arguments describe the mixed batch of that iteration:

    - ``prefill_tokens``: new prompt tokens processed this step (all prefill chunks together).
    - ``prefill_attn_pairs``: attention query-key pairs of those chunks; a chunk of ``c`` tokens
      starting at position ``p`` contributes ``c * (p + c / 2)``.
    - ``decode_seqs``: sequences generating one token this step.
    - ``decode_kv_tokens``: sum of the context lengths those decode sequences attend over.
    """

    def step_time_s(
        self, prefill_tokens: int, prefill_attn_pairs: float, decode_seqs: int, decode_kv_tokens: int
    ) -> float: ...
