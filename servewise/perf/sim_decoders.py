"""The decoding sequences of the simulated engine, with O(1)/O(16) answers to the scheduler's questions.

All decoding sequences advance by one token per engine step, so a sequence's context is stored as an
offset from the engine's global step counter ``D`` (context = ``off + D``) and its finish as the step
number at which it emits its last token. Nothing per sequence changes from step to step.

KV blocks: a context of ``c`` tokens holds ``ceil(c / 16)`` blocks and needs ``((c - 1) % 16 + k) // 16``
new ones to run ``k`` more steps. Because all contexts grow together, a 16-bin histogram of
``(off - 1) % 16`` answers "how many new blocks for k steps" and "how many steps until a shortage"
for the whole set without touching the sequences.
"""

from __future__ import annotations

import numpy as np

from servewise.perf.sim_requests import BLOCK_SIZE

NEVER = 1 << 62


def blocks_for(tokens: int) -> int:
    """KV blocks holding ``tokens`` tokens."""
    return -(-tokens // BLOCK_SIZE)


class DecodingSet:
    """Compact arrays of the running sequences past their prompt (swap-remove on removal)."""

    def __init__(self, capacity: int) -> None:
        self.off = np.zeros(capacity, dtype=np.int64)  # context = off + D
        self.fin = np.zeros(capacity, dtype=np.int64)  # D at which the last token is emitted
        self.req = np.zeros(capacity, dtype=np.int64)  # request id
        self.adm = np.zeros(capacity, dtype=np.int64)  # admission sequence number (preemption order)
        self.n = 0
        self.sum_off = 0
        self.next_fin = NEVER  # smallest fin, kept up to date
        self.fill_hist = [0] * BLOCK_SIZE  # sequences by (off - 1) % 16

    def add(self, request: int, admission: int, context: int, D: int, tokens_left: int) -> None:
        """A sequence with ``context`` tokens cached that will emit ``tokens_left`` more tokens."""
        i = self.n
        off = context - D
        self.off[i] = off
        self.fin[i] = D + tokens_left
        self.req[i] = request
        self.adm[i] = admission
        self.n = i + 1
        self.sum_off += off
        self.fill_hist[(off - 1) % BLOCK_SIZE] += 1
        self.next_fin = min(self.next_fin, D + tokens_left)

    def remove(self, j: int, D: int) -> tuple[int, int, int]:
        """Drop slot ``j``; returns (request, blocks it held, tokens it still had to emit)."""
        last = self.n - 1
        r = int(self.req[j])
        off = int(self.off[j])
        fin = int(self.fin[j])
        self.sum_off -= off
        self.fill_hist[(off - 1) % BLOCK_SIZE] -= 1
        if j != last:
            for arr in (self.off, self.fin, self.req, self.adm):
                arr[j] = arr[last]
        self.n = last
        if fin == self.next_fin:
            self.next_fin = int(self.fin[:last].min()) if last else NEVER
        return r, blocks_for(off + D), fin - D

    def kv_tokens(self, D: int) -> int:
        """Tokens the sequences attend over in the next step (context + the token being decoded)."""
        return self.sum_off + self.n * (D + 1)

    def latest(self) -> int:
        """Slot of the most recently admitted sequence."""
        return int(np.argmax(self.adm[: self.n]))

    def needs_block_now(self, j: int, D: int) -> bool:
        return (int(self.off[j]) + D) % BLOCK_SIZE == 0

    def finishing(self, D: int) -> list[int]:
        """Slots whose last token is emitted at step ``D``, highest first (safe to remove in order)."""
        if self.next_fin != D:
            return []
        return list(np.flatnonzero(self.fin[: self.n] == D)[::-1].tolist())

    def blocks_needed(self, k: int, D: int) -> int:
        """New KV blocks the sequences need to run ``k`` more steps."""
        hist = self.fill_hist
        if k == 1:  # only sequences whose last block is full
            return hist[(BLOCK_SIZE - 1 - D) % BLOCK_SIZE]
        total = 0
        for m in range(BLOCK_SIZE):
            if hist[m]:
                total += hist[m] * (((m + D) % BLOCK_SIZE + k) // BLOCK_SIZE)
        return total

    def steps_until_short(self, free: int, D: int, limit: int) -> int:
        """The most steps (at most ``limit``) the sequences can run with ``free`` blocks, no preemption."""
        n = self.n
        if n == 0:
            return limit
        rounds, rem = divmod(free, n)  # every 16 steps each sequence needs exactly one block
        by_fill = [0] * BLOCK_SIZE  # sequences by (context - 1) % 16 right now
        for m, count in enumerate(self.fill_hist):
            by_fill[(m + D) % BLOCK_SIZE] += count
        extra, crossing = 0, 0
        for t in range(1, BLOCK_SIZE):  # in t more steps, fills >= 16 - t cross a block boundary
            crossing += by_fill[BLOCK_SIZE - t]
            if crossing > rem:
                break
            extra = t
        return min(BLOCK_SIZE * rounds + extra, limit)
