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
from servewise.perf.sim_decoders import DecodingSet, blocks_for
from servewise.perf.sim_requests import RequestSet

MAX_JUMP_STEPS = 4096  # longest decode-only run advanced in one vectorized jump


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
        self.dec = DecodingSet(limits.max_num_seqs)
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
            if self.dec.n == 0 and self.partial < 0 and not self.waiting:
                if self.next_arrival >= self.n_req or math.isinf(self.arrival[self.next_arrival]):
                    break
                self.clock = max(self.clock, self.arrival[self.next_arrival])
                continue
            if self.partial < 0 and self.dec.n and not self._head_admissible() and self._jump():
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
        dec = self.dec
        if dec.n:
            need = dec.blocks_needed(1, D)
            while need > free:
                preempted = True
                if self.partial >= 0:
                    free += self._preempt_partial()
                    continue
                j = dec.latest()
                need -= dec.needs_block_now(j, D)
                free += self._preempt_decoder(j)
            self.used += need
            free -= need
            budget -= dec.n
        n = dec.n
        kv_tokens = dec.kv_tokens(D)
        prefill_tokens = 0
        pairs = 0.0
        done_prefill: list[int] = []  # requests whose prompt completes this step
        if self.partial >= 0:
            r, done = self.partial, self.part_done
            chunk = min(self.part_total - done, budget)
            new_blocks = blocks_for(done + chunk) - blocks_for(done)
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
        n = self.dec.n
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
        need = self.dec.blocks_needed(1, self.D)
        return blocks_for(cached + chunk) <= self.lim.kv_blocks - self.used - need

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
            blocks = blocks_for(cached + chunk)
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
        context = self.prompt[r] + self.gen[r] - 1  # tokens now in the KV cache
        left = self.out_len[r] - self.gen[r]
        if left <= 0:
            self.finish[r] = self.clock
            self.used -= blocks_for(context)
            self._release_client(self.clock)
        else:
            self.dec.add(r, self.adm[r], context, self.D, left)

    # ----------------------------------------------------------------- removal
    def _preempt_decoder(self, j: int) -> int:
        r, blocks, left = self.dec.remove(j, self.D)
        self.used -= blocks
        self.gen[r] = self.out_len[r] - left
        self.waiting.appendleft(r)
        self.preemptions += 1
        return blocks

    def _preempt_partial(self) -> int:
        blocks = blocks_for(self.part_done)
        self.used -= blocks
        self.waiting.appendleft(self.partial)
        self.partial = -1
        self.preemptions += 1
        return blocks

    def _complete_decoders(self) -> None:
        for j in self.dec.finishing(self.D):
            r, blocks, _ = self.dec.remove(j, self.D)
            self.used -= blocks
            self.gen[r] = self.out_len[r]
            self.finish[r] = self.clock
            self._release_client(self.clock)

    # ----------------------------------------------------------------- decode-only jumps
    def _jump(self) -> bool:
        """Advance a run of decode-only steps in one go; False when not even one step is safe.

        Called when no request is in chunked prefill and the waiting queue's head cannot be admitted
        (or the queue is empty). Such a head stays blocked while only decodes run: no slot frees up,
        free blocks only shrink and the token budget left after the decodes is constant. The run
        stops at the first completion, before a block shortage would force a preemption, and, when
        the queue is empty, after the step during which the next request arrives.
        """
        dec, D = self.dec, self.D
        n = dec.n
        k = min(dec.next_fin - D, dec.steps_until_short(self.lim.kv_blocks - self.used, D, MAX_JUMP_STEPS))
        if k <= 0:
            return False
        next_t = math.inf
        if not self.waiting and n < self.lim.max_num_seqs and self.next_arrival < self.n_req:
            next_t = self.arrival[self.next_arrival]
        kv0 = dec.kv_tokens(D)
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
        self.used += dec.blocks_needed(k, D)
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
