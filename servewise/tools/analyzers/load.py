"""Analyzers of how a deployment copes with its load: KV cache, queueing, prefill, decode, slack."""

from __future__ import annotations

from servewise.domain import Dtype, Finding, Severity
from servewise.domain.histograms import bucket_holding, shown_ms
from servewise.tools.analyzers.base import AnalysisInput, mean_input_len, mean_output_len

KV_FULL = 0.90  # kv_cache_usage above which new sequences wait for blocks
PREEMPT_RATE = 0.01  # preemptions/s above which we call it recompute thrash
WAIT_PER_REPLICA = 1.0  # queued requests per replica before we call it queueing
SLO_NEAR = 0.8  # a p99 above this fraction of its objective is "close to the SLO"
IDLE_UTIL = 0.35  # gpu_utilization below which GPUs are mostly idle
SLACK = 0.5  # p99 below this fraction of its objective = large slack
UNDER_BATCH_KV = 0.6  # running near max_num_seqs while KV is below this = the seq cap binds
# window-mean running / cap above which the cap binds at peaks: demo ticket-triage (12 sequences per
# replica, requests waiting, KV 2 % used) averages 0.59-0.70 of its cap from one window to the next
UNDER_BATCH_RUNNING = 0.5
# requests waiting on average (window mean) while KV is nearly free: with 12 slots per replica
# ticket-triage queued at bursts only (0.3-0.9 waiting on average, TTFT p50 83 ms, p99 3.7-4.5 s)
UNDER_BATCH_WAITING = 0.1
# A TTFT p99 above this many times what prefill explains (one prompt's prefill, stretched by the
# share of the GPU that prompts keep busy) is waiting for something else: a batch slot, the queue.
PREFILL_EXPLAINS = 4.0
# Decode steps within this factor of the memory floor (weights + the running sequences' KV read once
# per step at peak bandwidth) are memory-bound; far above it the time goes elsewhere (prefill chunks
# sharing the step, preemptions, overheads), and fewer weight bytes would barely help.
DECODE_NEAR_FLOOR = 2.0


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
        if ttft > _prefill_explains(inp, in_len):
            return []  # one prompt's prefill is a small part of the TTFT: it waits for something else
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


def _prefill_explains(inp: AnalysisInput, in_len: float) -> float:
    """The largest TTFT p99 (ms) prefill compute can explain: ``PREFILL_EXPLAINS`` x one prompt's
    prefill time / (1 - the share of the GPU busy with prefill). Unknown prefill time: no limit.
    Demo ticket-triage: 800-token prompts prefill in ~74 ms on its A100, at 13 % of the GPU, against
    a 4.5 s TTFT p99 (the max_num_seqs cap made requests wait, not prefill)."""
    if inp.prefill_ms is None or in_len <= 0:
        return float("inf")
    prompt_rate = inp.signal("prompt_tokens_per_s")
    busy = (prompt_rate or 0.0) / inp.replicas() * inp.prefill_ms / in_len / 1e3
    return PREFILL_EXPLAINS * inp.prefill_ms / (1.0 - min(busy, 0.9))


def _step_bytes(inp: AnalysisInput, running_per_replica: float) -> tuple[float, float] | None:
    """(weight bytes, KV bytes) one decode step reads per GPU: the weights (``weights_gb`` is GiB)
    and the running sequences' KV cache at their mean context."""
    if inp.memory is None:
        return None
    in_len, out_len = mean_input_len(inp), mean_output_len(inp)
    context = (in_len or 0.0) + (out_len or 0.0) / 2.0
    return inp.memory.weights_gb * 2**30, running_per_replica * context * inp.memory.kv_bytes_per_token


def _decode_floor_ms(inp: AnalysisInput, read: tuple[float, float] | None) -> float | None:
    """One decode step at peak memory bandwidth: ``read`` (``_step_bytes``) once per GPU, one
    pipeline stage after another."""
    if inp.hardware is None or read is None:
        return None
    stage_ms = sum(read) / (inp.hardware.memory_bandwidth_gbs * 1e9) * 1e3
    return stage_ms * inp.config.pipeline_parallel


def decode_memory_bound(inp: AnalysisInput) -> list[Finding]:
    """Slow tokens at a small batch whose steps run at memory speed: fewer bytes per step (weights
    or KV cache, whichever is larger and 16-bit) or more bandwidth per replica."""
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
    limit = _tpot_limit(inp)
    evidence = [inp.evidence("itl_p99_ms", limit), inp.evidence("requests_running")]
    read = _step_bytes(inp, per_replica)
    floor_ms, itl_p50 = _decode_floor_ms(inp, read), inp.signal("itl_p50_ms")
    if floor_ms is not None:
        if itl_p50 is not None and itl_p50 > DECODE_NEAR_FLOOR * floor_ms:
            return []  # steps are far slower than reading memory: not what bounds decode
        # threshold = the memory floor of one step (weights + KV)
        evidence.append(inp.evidence("itl_p50_ms", round(floor_ms, 3)))
    sixteen = (Dtype.BF16, Dtype.FP16)
    weights, kv_read = read or (1.0, 0.0)
    head = f"ITL p99 {itl:.1f} ms at only {per_replica:.1f} running sequences per replica: each decode step reads"
    if bucket := bucket_holding(inp.config.engine.value, "itl_p99_ms", itl, limit):
        head = (
            f"ITL p99 {itl:.1f} ms (interpolated in the histogram's ({bucket[0]:g}, {bucket[1]:g}] bucket, which"
            f" holds the {limit:.0f} ms threshold: the true p99 may be under it) at only"
            f" {per_replica:.1f} running sequences per replica: each decode step reads"
        )
    if kv_read > weights and inp.config.quantization.kv_cache in sixteen:
        text = (
            f"{head} {kv_read / 1e9:.1f} GB of 16-bit KV cache beside {weights / 1e9:.1f} GB of weights per GPU;"
            " an fp8 KV cache halves the larger part."
        )
        knob = "quantization.kv_cache"
    elif inp.config.quantization.weights in sixteen:
        fp8 = inp.hardware is None or Dtype.FP8 in inp.hardware.tflops
        fewer = "fp8 or int4 weights cut" if fp8 else "int4 weights (this GPU has no fp8) cut"
        text = f"{head} the 16-bit weights from memory; {fewer} the bytes per step."
        knob = "quantization.weights"
    else:
        text = f"{head} at memory speed; more tensor parallelism adds bandwidth per replica."
        knob = "tensor_parallel"
    return [inp.finding("decode_memory_bound", Severity.WARNING, text, evidence, knob)]


def under_batched(inp: AnalysisInput) -> list[Finding]:
    """The max_num_seqs cap, not memory, limits the batch while requests wait."""
    running, waiting, kv = (inp.signal(s) for s in ("requests_running", "requests_waiting", "kv_cache_usage"))
    if running is None or waiting is None or kv is None:
        return []
    cap = inp.config.max_num_seqs * inp.replicas()
    if running < UNDER_BATCH_RUNNING * cap or waiting <= UNDER_BATCH_WAITING or kv >= UNDER_BATCH_KV:
        return []
    return [
        inp.finding(
            "under_batched",
            Severity.WARNING,
            f"{running:.0f} of max {cap} sequences (max_num_seqs {inp.config.max_num_seqs} x {inp.replicas()}"
            f" replicas) running with {waiting:.1f} waiting but KV only {kv:.0%} "
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
