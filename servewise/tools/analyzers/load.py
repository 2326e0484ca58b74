"""Analyzers of how a deployment copes with its load: KV cache, queueing, prefill, decode, slack."""

from __future__ import annotations

from servewise.domain import Dtype, Finding, Severity
from servewise.domain.histograms import shown_ms
from servewise.tools.analyzers.base import AnalysisInput, mean_input_len

KV_FULL = 0.90  # kv_cache_usage above which new sequences wait for blocks
PREEMPT_RATE = 0.01  # preemptions/s above which we call it recompute thrash
WAIT_PER_REPLICA = 1.0  # queued requests per replica before we call it queueing
SLO_NEAR = 0.8  # a p99 above this fraction of its objective is "close to the SLO"
IDLE_UTIL = 0.35  # gpu_utilization below which GPUs are mostly idle
SLACK = 0.5  # p99 below this fraction of its objective = large slack
UNDER_BATCH_KV = 0.6  # running near max_num_seqs while KV is below this = the seq cap binds
UNDER_BATCH_RUNNING = 0.6  # window-mean running / cap above which the cap binds at peaks


def kv_saturation(inp: AnalysisInput) -> list[Finding]:
    """KV cache nearly full and/or sequences being preempted (recomputed)."""
    kv, pre = inp.signal("kv_cache_usage"), inp.signal("preemptions_per_s")
    full = kv is not None and kv >= KV_FULL
    thrash = pre is not None and pre > PREEMPT_RATE
    if not (full or thrash):
        return []
    kv16 = inp.config.quantization.kv_cache in (Dtype.BF16, Dtype.FP16)
    knob = "quantization.kv_cache" if kv16 else "replicas"
    what = []
    if full:
        what.append(f"KV cache {kv:.0%} full")
    if thrash:
        what.append(f"{pre:.2f} preemptions/s")
    fix = "an fp8 KV cache doubles its capacity" if kv16 else "more replicas spread the sequences"
    return [
        inp.finding(
            "kv_saturation",
            Severity.CRITICAL if thrash else Severity.WARNING,
            f"{' and '.join(what)}: sequences wait for KV blocks or are recomputed; {fix}.",
            [inp.evidence("kv_cache_usage", KV_FULL), inp.evidence("preemptions_per_s", PREEMPT_RATE)],
            knob,
        )
    ]


def queueing(inp: AnalysisInput) -> list[Finding]:
    """Requests wait in the engine queue: arrivals above what the replicas serve."""
    waiting, running = inp.signal("requests_waiting"), inp.signal("requests_running")
    if waiting is None:
        return []
    threshold = WAIT_PER_REPLICA * inp.replicas()
    if waiting <= threshold:
        return []
    severe = running is not None and waiting > max(running, 1.0)
    return [
        inp.finding(
            "queueing",
            Severity.CRITICAL if severe else Severity.WARNING,
            f"{waiting:.1f} requests waiting over {inp.replicas()} replica(s) "
            f"({(running or 0):.1f} running): arrivals exceed capacity; add replicas or capacity.",
            [inp.evidence("requests_waiting", threshold), inp.evidence("requests_running")],
            "replicas",
        )
    ]


def _ttft_limit(inp: AnalysisInput) -> float:
    slo = inp.deployment.slo
    if slo is not None and slo.ttft_p99_ms is not None:
        return SLO_NEAR * slo.ttft_p99_ms
    return 2000.0


def _tpot_limit(inp: AnalysisInput) -> float:
    slo = inp.deployment.slo
    if slo is not None and slo.tpot_p99_ms is not None:
        return SLO_NEAR * slo.tpot_p99_ms
    return 100.0


def prefill_bound(inp: AnalysisInput) -> list[Finding]:
    """Slow first tokens caused by prefill: a token budget that splits every prompt into many
    chunks, or long prompts while decode is fine and the queue is short."""
    ttft = inp.signal("ttft_p99_ms")
    if ttft is None or ttft <= _ttft_limit(inp):
        return []
    in_len = mean_input_len(inp)
    budget = inp.config.max_num_batched_tokens
    if in_len is None or in_len < 512:
        return []
    starved = in_len >= 2 * budget  # each prompt needs several steps of the whole budget
    if not starved:
        itl = inp.signal("itl_p99_ms")
        waiting = inp.signal("requests_waiting") or 0.0
        if (itl is not None and itl > _tpot_limit(inp)) or waiting > WAIT_PER_REPLICA * inp.replicas():
            return []  # overload or decode explain it better
        if under_batched(inp):
            return []  # requests queue behind the max_num_seqs cap, which under_batched says, not prefill
    chunks = in_len / budget
    return [
        inp.finding(
            "prefill_bound",
            Severity.CRITICAL if starved and chunks >= 4 else Severity.WARNING,
            f"TTFT p99 {shown_ms(inp.config.engine.value, 'ttft_p99_ms', ttft)} ms with ~{in_len:.0f}-token"
            f" prompts and a {budget}-token step budget "
            f"({chunks:.1f} budgets per prompt): "
            + (
                "prefill is chunked too finely; raise max_num_batched_tokens."
                if starved
                else "prefill compute dominates; more tensor parallelism or a faster GPU helps."
            ),
            [inp.evidence("ttft_p99_ms", _ttft_limit(inp)), inp.evidence("prompt_tokens_per_s")],
            "max_num_batched_tokens" if starved else "tensor_parallel",
        )
    ]


def decode_memory_bound(inp: AnalysisInput) -> list[Finding]:
    """Slow tokens at a small batch with 16-bit weights: each step streams all weights."""
    itl = inp.signal("itl_p99_ms")
    running = inp.signal("requests_running")
    if itl is None or itl <= _tpot_limit(inp) or running is None:
        return []
    per_replica = running / inp.replicas()
    if per_replica > 0.5 * inp.config.max_num_seqs:
        return []
    kv = inp.signal("kv_cache_usage")
    if kv is not None and kv >= KV_FULL:
        return []  # the batch is small because the KV cache is full (kv_saturation), not by choice
    evidence = [inp.evidence("itl_p99_ms", _tpot_limit(inp)), inp.evidence("requests_running")]
    if inp.hardware is not None and inp.memory is not None:
        floor_ms = inp.memory.weights_gb / inp.hardware.memory_bandwidth_gbs * 1e3
        evidence.append(
            inp.evidence("itl_p50_ms", round(floor_ms, 3))
        )  # threshold = the weight-streaming floor of one step
    w16 = inp.config.quantization.weights in (Dtype.BF16, Dtype.FP16)
    return [
        inp.finding(
            "decode_memory_bound",
            Severity.WARNING,
            f"ITL p99 {itl:.1f} ms at only {per_replica:.1f} running sequences per replica: decode is "
            + (
                "bound by streaming 16-bit weights; fp8/int4 weights cut the bytes per step."
                if w16
                else "memory-bound; more tensor parallelism adds bandwidth per replica."
            ),
            evidence,
            "quantization.weights" if w16 else "tensor_parallel",
        )
    ]


def under_batched(inp: AnalysisInput) -> list[Finding]:
    """The max_num_seqs cap, not memory, limits the batch while requests wait."""
    running, waiting, kv = (inp.signal(s) for s in ("requests_running", "requests_waiting", "kv_cache_usage"))
    if running is None or waiting is None or kv is None:
        return []
    cap = inp.config.max_num_seqs * inp.replicas()
    if running < UNDER_BATCH_RUNNING * cap or waiting <= 0.5 or kv >= UNDER_BATCH_KV:
        return []
    return [
        inp.finding(
            "under_batched",
            Severity.WARNING,
            f"{running:.0f} of max {cap} sequences running with {waiting:.1f} waiting but KV only {kv:.0%} "
            "used: max_num_seqs caps the batch; raise it.",
            [
                inp.evidence("requests_running", UNDER_BATCH_RUNNING * cap),
                inp.evidence("kv_cache_usage", UNDER_BATCH_KV),
            ],
            "max_num_seqs",
        )
    ]


def over_provisioned(inp: AnalysisInput) -> list[Finding]:
    """Mostly idle GPUs with latencies far inside the SLO."""
    util, kv = inp.signal("gpu_utilization"), inp.signal("kv_cache_usage")
    if util is None or util >= IDLE_UTIL or (kv is not None and kv >= 0.4):
        return []
    if inp.config.total_gpus <= 1:
        return []
    slo = inp.deployment.slo
    if slo is None:
        return []
    checks = [
        ("ttft_p99_ms", slo.ttft_p99_ms),
        ("itl_p99_ms", slo.tpot_p99_ms),
        ("e2e_p99_ms", slo.e2e_p99_ms),
    ]
    evidence = [inp.evidence("gpu_utilization", IDLE_UTIL)]
    for name, limit in checks:
        if limit is None:
            continue
        value = inp.signal(name)
        if value is None or value > SLACK * limit:
            return []
        evidence.append(inp.evidence(name, SLACK * limit))
    if len(evidence) == 1:
        return []
    knob = "replicas" if inp.config.replicas > 1 else "tensor_parallel"
    return [
        inp.finding(
            "over_provisioned",
            Severity.WARNING,
            f"GPUs {util:.0%} busy on {inp.config.total_gpus} GPUs with p99 latencies under half the SLO: "
            "fewer or smaller replicas would serve this load.",
            evidence,
            knob,
        )
    ]
