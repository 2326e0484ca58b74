"""The event loop: one replica's continuous-batching engine, step by step, as vLLM V1 schedules it.

Each iteration (engine step):

1. Running requests are served in admission order: every decoding sequence gets one token (and a
   new 16-token KV block when its context crosses a block boundary); the request still in chunked
   prefill (at most one, always the most recently admitted) gets the next chunk of its prompt.
   When a block cannot be had, the most recently admitted running request is preempted (recompute:
   its blocks are freed and it goes back to the front of the waiting queue).
2. If nothing was preempted, waiting requests are admitted first-come-first-served while fewer than
   ``max_num_seqs`` run, the step's token budget (``max_num_batched_tokens``) lasts and their first
   chunk's KV blocks are free. Without chunked prefill a prompt must fit the remaining budget whole;
   a prompt longer than the whole budget runs as the step's only prefill.
3. The step takes ``IterationCost.step_time_s(...)`` of the mixed batch; then tokens are emitted.

Speed: decoding sequences live in compact numpy arrays, with their context stored as an offset from
a global step counter, so a decode step costs O(1) Python work. Runs of identical decode-only steps
(nothing can be admitted, nobody finishes, no block shortage, no arrival that matters) are advanced
in one vectorized jump.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from servewise.errors import InputError
from servewise.perf.interfaces import IterationCost
from servewise.perf.sim_requests import BLOCK_SIZE, RequestSet

MAX_JUMP_STEPS = 4096  # longest decode-only run advanced in one vectorized jump
_NEVER = 1 << 62


@dataclass(frozen=True)
class EngineLimits:
    """The scheduler knobs of one replica."""

    max_num_seqs: int
    max_num_batched_tokens: int
    chunked_prefill: bool
    kv_blocks: int


@dataclass(frozen=True)
class EngineTrace:
    """What happened to each request (seconds; ``nan`` when it never happened) plus engine totals."""

    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    output_len: np.ndarray
    end_s: float
    busy_s: float
    kv_usage_mean: float
    kv_usage_peak: float
    preemptions: int
    steps: int
    events: int  # scheduling decisions taken: single steps plus multi-step decode jumps


def decode_costs_vectorize(cost: IterationCost) -> bool:
    """True when ``cost`` accepts an array of ``decode_kv_tokens`` and matches its scalar answers."""
    kv = np.array([1000, 5000, 20000], dtype=np.int64)
    try:
        got = np.asarray(cost.step_time_s(0, 0.0, 8, kv), dtype=np.float64)  # type: ignore[arg-type]
    except Exception:  # any failure just means "call it one step at a time"
        return False
    if got.shape != kv.shape:
        return False
    want = [cost.step_time_s(0, 0.0, 8, int(x)) for x in kv]
    return bool(np.allclose(got, want, rtol=1e-9, atol=0.0))


def _blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_SIZE)


class Engine:
    """One simulation run; call :meth:`run` once."""

    def __init__(self, limits: EngineLimits, requests: RequestSet, cost: IterationCost) -> None:
        if limits.max_num_batched_tokens < limits.max_num_seqs:
            raise InputError(
                f"max_num_batched_tokens ({limits.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({limits.max_num_seqs}), as vLLM requires",
                field="max_num_batched_tokens",
            )
        if limits.kv_blocks < 1:
            raise InputError("the replica has no KV-cache blocks", field="kv_capacity_tokens")
        self.lim = limits
        self.cost = cost
        self.vector_cost = decode_costs_vectorize(cost)
        n = len(requests)
        self.n_req = n
        self.arrival = requests.arrival_s.tolist()
        self.prompt = requests.input_len.tolist()
        self.out_len = requests.output_len.tolist()
        self.cached = requests.cached_len.tolist()
        self.rejected = requests.rejected.tolist()
        self.clients = requests.closed_loop_clients
        self.next_release = min(self.clients, n) if self.clients else n
        self.gen = [0] * n
        self.adm = [0] * n
        self.first_tok = [math.nan] * n
        self.finish = [math.nan] * n
        # decoding sequences, compact: context = off + D, finishes when D reaches fin
        cap = limits.max_num_seqs
        self.dec_off = np.zeros(cap, dtype=np.int64)
        self.dec_fin = np.zeros(cap, dtype=np.int64)
        self.dec_req = np.zeros(cap, dtype=np.int64)
        self.dec_adm = np.zeros(cap, dtype=np.int64)
        self.n_dec = 0
        self.sum_off = 0
        self.next_fin = _NEVER  # smallest dec_fin, kept up to date
        # decoders by (off - 1) mod 16: the fill of each one's last block, shifted by D
        self.fill_hist = [0] * BLOCK_SIZE
        self._arange = np.arange(MAX_JUMP_STEPS, dtype=np.int64)
        self.D = 0
        # the request in chunked prefill (-1: none), its computed and target token counts
        self.partial = -1
        self.part_done = 0
        self.part_total = 0
        self.waiting: deque[int] = deque()
        self.next_arrival = 0
        self.adm_seq = 0
        self.clock = 0.0
        self.busy = 0.0
        self.used = 0
        self.kv_area = 0.0
        self.peak = 0
        self.preemptions = 0
        self.steps = 0
        self.events = 0

    # ----------------------------------------------------------------- main loop
    def run(self) -> EngineTrace:
        while True:
            self._enqueue_arrivals()
            if self.n_dec == 0 and self.partial < 0 and not self.waiting:
                if self.next_arrival >= self.n_req or math.isinf(self.arrival[self.next_arrival]):
                    break
                self.clock = max(self.clock, self.arrival[self.next_arrival])
                continue
            if self.partial < 0 and self.n_dec and not self._head_admissible() and self._jump():
                continue
            self._step()
        blocks = self.lim.kv_blocks
        end = self.clock
        return EngineTrace(
            arrival_s=np.asarray(self.arrival, dtype=np.float64),
            first_token_s=np.asarray(self.first_tok, dtype=np.float64),
            finish_s=np.asarray(self.finish, dtype=np.float64),
            output_len=np.asarray(self.out_len, dtype=np.int64),
            end_s=end,
            busy_s=self.busy,
            kv_usage_mean=self.kv_area / (end * blocks) if end > 0 else 0.0,
            kv_usage_peak=self.peak / blocks,
            preemptions=self.preemptions,
            steps=self.steps,
            events=self.events,
        )

    def _enqueue_arrivals(self) -> None:
        arrival, i, n = self.arrival, self.next_arrival, self.n_req
        while i < n and arrival[i] <= self.clock:
            if self.rejected[i]:
                self._release_client(arrival[i])
            else:
                self.waiting.append(i)
            i += 1
        self.next_arrival = i

    def _release_client(self, now: float) -> None:
        """Closed loop: the client whose request just ended sends its next one now."""
        if self.clients and self.next_release < self.n_req:
            self.arrival[self.next_release] = now
            self.next_release += 1

    # ----------------------------------------------------------------- one step
    def _step(self) -> None:
        """Schedule and run one step."""
        lim = self.lim
        budget = lim.max_num_batched_tokens
        free = lim.kv_blocks - self.used
        D = self.D
        preempted = False
        n = self.n_dec
        if n:
            need = self._blocks_needed(1)
            while need > free:
                preempted = True
                if self.partial >= 0:
                    free += self._preempt_partial()
                    continue
                j = int(np.argmax(self.dec_adm[:n]))
                if (int(self.dec_off[j]) + D) % BLOCK_SIZE == 0:
                    need -= 1
                free += self._preempt_decoder(j)
                n = self.n_dec
            self.used += need
            free -= need
            budget -= n
        kv_tokens = self.sum_off + n * (D + 1)
        prefill_tokens = 0
        pairs = 0.0
        done_prefill: list[int] = []  # requests whose prompt completes this step
        if self.partial >= 0:
            r, done = self.partial, self.part_done
            chunk = min(self.part_total - done, budget)
            new_blocks = _blocks(done + chunk) - _blocks(done)
            if new_blocks > free:
                free += self._preempt_partial()
                preempted = True
            else:
                self.used += new_blocks
                free -= new_blocks
                budget -= chunk
                prefill_tokens += chunk
                pairs += chunk * (done + chunk / 2.0)
                if done + chunk == self.part_total:
                    done_prefill.append(r)
                    self.partial = -1
                else:
                    self.part_done = done + chunk
        if not preempted:
            running = n + len(done_prefill) + (self.partial >= 0)
            prefill_tokens, pairs = self._admit(budget, free, running, prefill_tokens, pairs, done_prefill)
        if n == 0 and prefill_tokens == 0:
            if preempted:
                return
            raise RuntimeError("simulator stalled: nothing runs and nothing can be admitted")
        dt = float(self.cost.step_time_s(prefill_tokens, pairs, n, kv_tokens))
        if not dt > 0.0 or math.isinf(dt):
            raise InputError(f"IterationCost returned step time {dt!r}; it must be positive", field="cost")
        self.clock += dt
        self.busy += dt
        self.kv_area += dt * self.used
        self.peak = max(self.peak, self.used)
        self.D += 1
        self.steps += 1
        self.events += 1
        self._complete_decoders()
        for r in done_prefill:
            self._prompt_done(r)

    def _head_admissible(self) -> bool:
        """Would a decode-only step admit the head of the waiting queue? (No side effects.)"""
        if not self.waiting:
            return False
        lim = self.lim
        n = self.n_dec
        if n >= lim.max_num_seqs:
            return False
        r = self.waiting[0]
        cached = self.cached[r]
        todo = self.prompt[r] + self.gen[r] - cached
        budget = lim.max_num_batched_tokens - n
        if lim.chunked_prefill:
            chunk = min(todo, budget)
        elif todo <= budget or todo > lim.max_num_batched_tokens:
            chunk = todo
        else:
            return False
        # the decoders' own new blocks this step come first
        need = self._blocks_needed(1)
        return _blocks(cached + chunk) <= self.lim.kv_blocks - self.used - need

    def _admit(
        self, budget: int, free: int, running: int, prefill_tokens: int, pairs: float, done_prefill: list[int]
    ) -> tuple[int, float]:
        lim = self.lim
        waiting = self.waiting
        while waiting and running < lim.max_num_seqs and budget > 0:
            r = waiting[0]
            cached = self.cached[r]
            total = self.prompt[r] + self.gen[r]
            todo = total - cached
            if lim.chunked_prefill:
                chunk = min(todo, budget)
            elif todo <= budget or (todo > lim.max_num_batched_tokens and prefill_tokens == 0):
                chunk = todo
            else:
                break
            blocks = _blocks(cached + chunk)
            if blocks > free:
                break
            waiting.popleft()
            self.used += blocks
            free -= blocks
            budget -= chunk
            prefill_tokens += chunk
            pairs += chunk * (cached + chunk / 2.0)
            running += 1
            self.adm_seq += 1
            self.adm[r] = self.adm_seq
            if chunk == todo:
                done_prefill.append(r)
            else:
                self.partial, self.part_done, self.part_total = r, cached + chunk, total
        return prefill_tokens, pairs

    def _prompt_done(self, r: int) -> None:
        """The step that computed the last prompt token emitted a token; start decoding or finish."""
        self.gen[r] += 1
        if math.isnan(self.first_tok[r]):
            self.first_tok[r] = self.clock
        total = self.prompt[r] + self.gen[r] - 1  # tokens now in the KV cache
        left = self.out_len[r] - self.gen[r]
        if left <= 0:
            self.finish[r] = self.clock
            self.used -= _blocks(total)
            self._release_client(self.clock)
            return
        i = self.n_dec
        off = total - self.D
        self.dec_off[i] = off
        self.dec_fin[i] = self.D + left
        self.dec_req[i] = r
        self.dec_adm[i] = self.adm[r]
        self.n_dec = i + 1
        self.sum_off += off
        self.fill_hist[(off - 1) % BLOCK_SIZE] += 1
        self.next_fin = min(self.next_fin, self.D + left)

    # ----------------------------------------------------------------- removal
    def _remove_decoder(self, j: int) -> tuple[int, int]:
        """Drop decoder slot ``j`` (swap with the last); returns (request, blocks it held)."""
        last = self.n_dec - 1
        r = int(self.dec_req[j])
        off = int(self.dec_off[j])
        fin = int(self.dec_fin[j])
        self.sum_off -= off
        self.fill_hist[(off - 1) % BLOCK_SIZE] -= 1
        blocks = _blocks(off + self.D)
        if j != last:
            for arr in (self.dec_off, self.dec_fin, self.dec_req, self.dec_adm):
                arr[j] = arr[last]
        self.n_dec = last
        self.used -= blocks
        if fin == self.next_fin:
            self.next_fin = int(self.dec_fin[:last].min()) if last else _NEVER
        return r, blocks

    def _preempt_decoder(self, j: int) -> int:
        self.gen[int(self.dec_req[j])] = self.out_len[int(self.dec_req[j])] - (int(self.dec_fin[j]) - self.D)
        r, blocks = self._remove_decoder(j)
        self.waiting.appendleft(r)
        self.preemptions += 1
        return blocks

    def _preempt_partial(self) -> int:
        blocks = _blocks(self.part_done)
        self.used -= blocks
        self.waiting.appendleft(self.partial)
        self.partial = -1
        self.preemptions += 1
        return blocks

    def _complete_decoders(self) -> bool:
        if self.next_fin != self.D:
            return False
        for j in np.flatnonzero(self.dec_fin[: self.n_dec] == self.D)[::-1].tolist():
            r, _ = self._remove_decoder(j)
            self.gen[r] = self.out_len[r]
            self.finish[r] = self.clock
            self._release_client(self.clock)
        return True

    # ----------------------------------------------------------------- block arithmetic
    # A decoder with context c holds ceil(c / 16) blocks; over the next k steps it needs
    # ((c - 1) % 16 + k) // 16 new ones. All contexts grow together, so a 16-bin histogram of
    # (off - 1) % 16 answers these questions for the whole running set in O(16).
    def _blocks_needed(self, k: int) -> int:
        """New KV blocks the decoders need to run ``k`` more steps."""
        D, hist = self.D, self.fill_hist
        if k == 1:  # only decoders whose last block is full
            return hist[(BLOCK_SIZE - 1 - D) % BLOCK_SIZE]
        total = 0
        for m in range(BLOCK_SIZE):
            if hist[m]:
                total += hist[m] * (((m + D) % BLOCK_SIZE + k) // BLOCK_SIZE)
        return total

    def _steps_until_short(self, free: int) -> int:
        """The most decode steps the decoders can run with ``free`` blocks (no preemption)."""
        n = self.n_dec
        if n == 0:
            return MAX_JUMP_STEPS
        rounds, rem = divmod(free, n)  # every 16 steps each decoder needs exactly one block
        by_fill = [0] * BLOCK_SIZE  # decoders by (c - 1) % 16 right now
        D, hist = self.D, self.fill_hist
        for m, count in enumerate(hist):
            by_fill[(m + D) % BLOCK_SIZE] += count
        extra, crossing = 0, 0
        for t in range(1, BLOCK_SIZE):  # in t more steps, fills >= 16 - t cross a block boundary
            crossing += by_fill[BLOCK_SIZE - t]
            if crossing > rem:
                break
            extra = t
        return BLOCK_SIZE * rounds + extra

    # ----------------------------------------------------------------- decode-only jumps
    def _jump(self) -> bool:
        """Advance a run of decode-only steps in one go; False when not even one step is safe.

        Called when no request is in chunked prefill and the waiting queue's head cannot be admitted
        (or the queue is empty). Such a head stays blocked while only decodes run: no slot frees up,
        free blocks only shrink and the token budget left after the decodes is constant. The run
        stops at the first completion, before a block shortage would force a preemption, and, when
        the queue is empty, after the step during which the next request arrives.
        """
        n, D = self.n_dec, self.D
        k = min(self.next_fin - D, MAX_JUMP_STEPS, self._steps_until_short(self.lim.kv_blocks - self.used))
        if k <= 0:
            return False
        next_t = math.inf
        if not self.waiting and n < self.lim.max_num_seqs and self.next_arrival < self.n_req:
            next_t = self.arrival[self.next_arrival]
        kv0 = self.sum_off + n * (D + 1)
        if self.vector_cost:
            kv = kv0 + n * self._arange[:k]
            times = self.clock + np.cumsum(self.cost.step_time_s(0, 0.0, n, kv))  # type: ignore[arg-type]
            if next_t < math.inf:
                k = min(k, int(np.searchsorted(times, next_t)) + 1)
            end = float(times[k - 1])
        else:
            end, steps = self.clock, 0
            while steps < k:
                end += self.cost.step_time_s(0, 0.0, n, kv0 + n * steps)
                steps += 1
                if end >= next_t:
                    break
            k = steps
        used_before = self.used
        self.used += self._blocks_needed(k)
        dt = end - self.clock
        self.kv_area += dt * (used_before + self.used) / 2.0
        self.peak = max(self.peak, self.used)
        self.busy += dt
        self.clock = end
        self.D += k
        self.steps += k
        self.events += 1
        self._complete_decoders()
        return True


def run_engine(limits: EngineLimits, requests: RequestSet, cost: IterationCost) -> EngineTrace:
    """Simulate serving ``requests`` on one replica with the given scheduler limits and step cost."""
    return Engine(limits, requests, cost).run()
