"""The load a deployment serves, read from its telemetry when it declares none.

A deployment on a cluster may carry no ``servewise.io/workload`` declaration. Its engine still says
what it serves: the request rate (its busiest 5 minutes over the source's lookback, a day on
Prometheus), the mean prompt and output lengths (token rates / request rate) and, through the
per-request length histograms (vLLM ``request_prompt_tokens`` and ``request_generation_tokens``),
a p99 of each, and the prefix cache's hit rate. From those this module builds a ``Workload``:
log-normal lengths with the observed mean and p99, the hit rate as the prompts' shared prefix (a
lower bound: evictions and routing lose hits), prompt plus output at most the context the server
accepts now, so that a candidate never gets a shorter ``max_model_len`` than the deployment serves
today (the longest requests are not visible through a p99 read from 1-2-5 buckets).

It refuses (and says why) when the telemetry cannot show the offered load: a signal is missing, or
the server does not keep up, so what it completes is its capacity rather than the demand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.special import ndtr

from servewise.domain import DeploymentTelemetry, InferenceDeployment, LengthDistribution, Workload
from servewise.domain.histograms import vllm_length_buckets
from servewise.errors import ServewiseError
from servewise.perf.catalog import Catalog, get_catalog
from servewise.telemetry.promql import window_seconds

ANNOTATION = "the servewise.io/workload annotation on a cluster"
Z99 = 2.3263478740408408  # the standard normal's 99th percentile
REQUIRED = (
    "request_rate_per_s",
    "request_rate_peak_per_s",
    "prompt_tokens_per_s",
    "generation_tokens_per_s",
    "requests_waiting",
    "requests_running",
    "requests_waiting_peak",
)
DAY_S = 86400.0


@dataclass(frozen=True)
class Lengths:
    """One length as observed: its mean, its p99 (None: no histogram) and whether that p99 is only
    a lower bound (it fell beyond the top finite bucket)."""

    mean: float
    p99: float | None
    at_least: bool = False

    def shown(self, name: str) -> str:
        p99 = "p99 unknown" if self.p99 is None else f"p99 {'>= ' if self.at_least else ''}{self.p99:.0f}"
        return f"{name} {self.mean:.0f} tokens mean, {p99}"


def _clipped_mean(mean: float, sigma: float, longest: float) -> float:
    """E[min(X, longest)] of a log-normal X of ``mean`` and log-sd ``sigma``."""
    mu = math.log(mean) - sigma * sigma / 2
    z = (math.log(longest) - mu) / sigma
    return float(mean * ndtr(z - sigma) + longest * (1.0 - ndtr(z)))


def length_distribution(mean: float, p99: float | None, longest: int) -> LengthDistribution:
    """Log-normal lengths of ``mean`` whose 99th percentile is ``p99`` (fixed when the p99 is not
    above the mean, or the mean fills the room), clipped to ``[1, longest]``. A tail so heavy that
    clipping at ``longest`` would lower the mean of the lengths drawn by over 0.5 % gets a smaller
    sigma instead: the mean is what sizing and benchmarks read."""
    mean = min(max(mean, 1.0), float(longest))
    if p99 is None or not math.isfinite(p99) or p99 <= mean * 1.01 or mean >= 0.98 * longest:
        return LengthDistribution(kind="fixed", mean=mean, max=longest)
    # log-normal: ln(p99 / mean) = Z99 * s - s^2 / 2; the smaller root (the larger one is the
    # same p99 reached by a far heavier tail); past the vertex the p99 is out of reach: s = Z99
    gap = Z99 * Z99 - 2.0 * math.log(p99 / mean)
    sigma = Z99 - math.sqrt(gap) if gap > 0 else Z99
    if _clipped_mean(mean, sigma, longest) < 0.995 * mean:  # at s -> 0 it is the mean itself
        sigma = brentq(lambda s: _clipped_mean(mean, s, longest) - 0.995 * mean, 1e-3, sigma)
    std = mean * math.sqrt(math.expm1(sigma * sigma))
    return LengthDistribution(kind="lognormal", mean=mean, std=std, max=longest)


def rooms(prompt: Lengths, output: Lengths, longest: int) -> tuple[int, int]:
    """(prompt room, output room) that add up to the server's context: outputs get twice their
    p99 (or 4x their mean) when the prompts' p99 (or mean) leaves it, else the two share the
    context in proportion to those needs."""
    prompt_need = math.ceil(max(prompt.p99 or 0.0, prompt.mean))
    output_need = math.ceil(output.p99 or 2 * output.mean)
    out_room = min(2 * output_need, longest - prompt_need)
    if out_room < output_need:
        out_room = round(longest * output_need / (prompt_need + output_need))
    out_room = min(max(out_room, 16), longest - 16)
    return longest - out_room, out_room


def unobservable(dep: InferenceDeployment, tel: DeploymentTelemetry | None) -> str | None:
    """Why ``tel`` does not show the load offered to ``dep`` (None: it does): a signal is missing,
    or the server does not keep up, now (more requests waiting than running) or at its busiest
    (more waiting than a full batch per replica), so that what it completed is its capacity."""
    if tel is None:
        return "no telemetry"
    missing = [s for s in REQUIRED if tel.signals.get(s) is None]
    if missing:
        return f"telemetry lacks {', '.join(missing)}"
    if tel.signals["request_rate_per_s"] <= 0:
        return "no requests served in the window"
    waiting, running = tel.signals["requests_waiting"], tel.signals["requests_running"]
    if waiting > max(1.0, running):
        return (
            f"{waiting:.0f} requests wait on average beside {running:.0f} running: the rate it serves "
            f"({tel.signals['request_rate_per_s']:.2f} req/s) is less than the rate it is offered"
        )
    busiest = tel.signals["requests_waiting_peak"]
    batch = dep.config.max_num_seqs * max(tel.replicas or dep.config.replicas, 1)
    if busiest > batch:
        return (
            f"{busiest:.0f} requests waited in its busiest 5 minutes, more than a full batch on every "
            f"replica ({batch}): its peak rate ({tel.signals['request_rate_peak_per_s']:.2f} req/s) is "
            "what it could serve, not what it was offered"
        )
    return None


def observed_lengths(tel: DeploymentTelemetry, longest: int, engine: str) -> tuple[Lengths, Lengths]:
    """(prompt, output) lengths from token rates and length-histogram p99s. vLLM's buckets stop at
    the last 1-2-5 bound within the context: a p99 there is only known to be at least that."""
    rate, top = tel.signals["request_rate_per_s"], vllm_length_buckets(longest)[-1]

    def one(tokens: str, p99_signal: str) -> Lengths:
        p99 = tel.signals.get(p99_signal)
        return Lengths(tel.signals[tokens] / rate, p99, engine == "vllm" and p99 is not None and p99 >= top)

    return one("prompt_tokens_per_s", "prompt_len_p99"), one("generation_tokens_per_s", "output_len_p99")


def _workload(tel: DeploymentTelemetry, prompt: Lengths, output: Lengths, longest: int) -> Workload:
    prompt_room, output_room = rooms(prompt, output, longest)

    def dist(lengths: Lengths, room: int) -> LengthDistribution:
        p99 = float(room) if lengths.at_least else lengths.p99  # beyond the top bucket: up to the room
        return length_distribution(lengths.mean, p99, room)

    return Workload(
        input_len=dist(prompt, prompt_room),
        output_len=dist(output, output_room),
        arrival_rate_per_s=max(tel.signals["request_rate_peak_per_s"], tel.signals["request_rate_per_s"]),
        # the share of prompt tokens the prefix cache served: at most what the prompts share
        prefix_share=min(max(tel.signals.get("prefix_cache_hit_rate") or 0.0, 0.0), 1.0),
    )


def _observe(
    dep: InferenceDeployment, tel: DeploymentTelemetry | None, catalog: Catalog | None
) -> tuple[Workload, Lengths, Lengths] | str:
    """The observed workload and the lengths it came from, or why there is none."""
    why = unobservable(dep, tel)
    if why is not None or tel is None:
        return why or "no telemetry"
    longest = (catalog or get_catalog()).served_context(dep.config)
    prompt, output = observed_lengths(tel, longest, dep.config.engine.value)
    return _workload(tel, prompt, output, longest), prompt, output


def observed_workload(
    dep: InferenceDeployment, tel: DeploymentTelemetry | None, catalog: Catalog | None = None
) -> Workload | None:
    """The workload ``tel`` shows ``dep`` serving; None when ``unobservable`` says why not."""
    seen = _observe(dep, tel, catalog)
    return None if isinstance(seen, str) else seen[0]


def with_observed_workload(
    dep: InferenceDeployment, tel: DeploymentTelemetry | None, catalog: Catalog | None = None
) -> tuple[InferenceDeployment, str | None]:
    """``dep`` with the workload its telemetry shows when it declares none, and a note saying so."""
    if dep.workload is not None:
        return dep, None
    seen = _observe(dep, tel, catalog)
    if isinstance(seen, str) or tel is None:
        return (
            dep,
            f"{dep.ref.key}: no workload declared and none observed ({seen}); declare one ({ANNOTATION})",
        )
    wl, prompt, output = seen
    evidence = tel.evidence.get("request_rate_peak_per_s")
    lookback = evidence.window if evidence is not None else "?"
    short = ""
    try:
        if window_seconds(lookback) < DAY_S:
            short = ", less than a day: a daily peak may be missing"
    except ServewiseError:  # a lookback that is not a duration: said as it is
        pass
    sharing = (
        f"prefix share {wl.prefix_share:.2f}, the prefix cache's hit rate"
        if tel.signals.get("prefix_cache_hit_rate") is not None
        else f"no prefix sharing assumed (no prefix-cache {'hits' if tel.engine == 'sglang' else 'lookups'} seen)"
    )
    if prompt.p99 is None and output.p99 is None and tel.engine == "sglang":
        sharing += "; SGLang exports the length histograms only with --collect-tokens-histogram"
    note = (
        f"{dep.ref.key}: no workload declared; sized for the observed one ({prompt.shown('input')}; "
        f"{output.shown('output')}; {wl.arrival_rate_per_s:.2f} req/s, the busiest 5 minutes over "
        f"{lookback}{short}; {sharing}; prompt + output capped at "
        f"{wl.input_len.max + wl.output_len.max} tokens, the server's context)"
    )
    return dep.model_copy(update={"workload": wl}), note
