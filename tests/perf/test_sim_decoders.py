"""The decoding set's O(16) block arithmetic against brute force over the sequences."""

from __future__ import annotations

import numpy as np
import pytest

from servewise.perf.sim_decoders import DecodingSet, blocks_for


def brute_needed(contexts: np.ndarray, k: int) -> int:
    return int(sum(blocks_for(int(c) + k) - blocks_for(int(c)) for c in contexts))


@pytest.mark.parametrize("seed", range(5))
def test_blocks_needed_and_steps_until_short_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    D = int(rng.integers(0, 1000))
    contexts = rng.integers(1, 3000, n)
    dec = DecodingSet(64)
    for i, c in enumerate(contexts):
        dec.add(i, i, int(c), D, 10_000)
    assert dec.kv_tokens(D) == int(contexts.sum()) + n
    for k in (1, 2, 7, 15, 16, 17, 40, 100):
        assert dec.blocks_needed(k, D) == brute_needed(contexts, k)
    for free in (0, 1, n // 2, n, 3 * n + 5, 50 * n):
        k = dec.steps_until_short(free, D, limit=10_000)
        assert brute_needed(contexts, k) <= free
        assert brute_needed(contexts, k + 1) > free


def test_removal_keeps_aggregates_and_the_next_finish() -> None:
    dec = DecodingSet(8)
    D = 5
    for r, (ctx, left) in enumerate([(100, 3), (40, 9), (17, 1), (64, 20)]):
        dec.add(r, admission=r, context=ctx, D=D, tokens_left=left)
    assert dec.next_fin == D + 1 and dec.latest() == 3
    assert dec.finishing(D + 1) == [2] and dec.finishing(D + 2) == []
    r, blocks, left = dec.remove(2, D)
    assert (r, blocks, left) == (2, blocks_for(17), 1)
    assert dec.next_fin == D + 3 and dec.n == 3
    assert dec.kv_tokens(D) == 100 + 40 + 64 + 3
    assert dec.blocks_needed(16, D) == brute_needed(np.array([100, 40, 64]), 16)
