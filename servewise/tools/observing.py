"""The load a deployment serves, read from its telemetry when it declares none.

A deployment on a cluster may carry no ``servewise.io/workload`` declaration. Its engine still says
what it serves: the request rate, the mean prompt and output lengths (token rates / request rate)
and, through the per-request length histograms (vLLM ``request_prompt_tokens`` and
``request_generation_tokens``), a p99 of each. From those this module builds a ``Workload``: log-normal
lengths with the observed mean and p99, and at most the context the server accepts now, so that a
candidate never gets a shorter ``max_model_len`` than the deployment serves today (the longest
requests are not visible through a p99 read from 1-2-5 buckets).
"""

from __future__ import annotations

import math

from servewise.domain import DeploymentTelemetry, InferenceDeployment, LengthDistribution, Workload
from servewise.perf.catalog import Catalog, get_catalog

ANNOTATION = "the servewise.io/workload annotation on a cluster"
Z99 = 2.3263478740408408  # the standard normal's 99th percentile
REQUIRED = ("request_rate_per_s", "prompt_tokens_per_s", "generation_tokens_per_s")


def length_distribution(mean: float, p99: float | None, longest: int) -> LengthDistribution:
    """Log-normal lengths of ``mean`` whose 99th percentile is ``p99`` (fixed when the p99 is not
    above the mean), clipped to ``[1, longest]``."""
    mean = min(max(mean, 1.0), float(longest))
    if p99 is None or not math.isfinite(p99) or p99 <= mean * 1.01:
        return LengthDistribution(kind="fixed", mean=mean, max=longest)
    # log-normal: ln(p99 / mean) = Z99 * s - s^2 / 2; the smaller root (the larger one is the
    # same p99 reached by a far heavier tail); past the vertex the p99 is out of reach: s = Z99
    gap = Z99 * Z99 - 2.0 * math.log(p99 / mean)
    sigma = Z99 - math.sqrt(gap) if gap > 0 else Z99
    std = mean * math.sqrt(math.expm1(sigma * sigma))
    return LengthDistribution(kind="lognormal", mean=mean, std=std, max=longest)


def unobservable(dep: InferenceDeployment, tel: DeploymentTelemetry | None) -> str | None:
    """Why ``tel`` does not show the load offered to ``dep`` (None: it does). A queue longer than a
    full batch per replica (mean over the window) means the server does not keep up: what it
    completes is its capacity, not the demand, and sizing for that would keep the backlog."""
    if tel is None:
        return "no telemetry"
    missing = [s for s in REQUIRED if tel.signals.get(s) is None]
    if missing:
        return f"telemetry lacks {', '.join(missing)}"
    if tel.signals["request_rate_per_s"] <= 0:
        return "no requests served in the window"
    waiting = tel.signals.get("requests_waiting") or 0.0
    if waiting > dep.config.max_num_seqs * max(tel.replicas or dep.config.replicas, 1):
        return (
            f"{waiting:.0f} requests wait on average: the rate it serves "
            f"({tel.signals['request_rate_per_s']:.2f} req/s) is less than the rate it is offered"
        )
    return None


def observed_workload(
    dep: InferenceDeployment, tel: DeploymentTelemetry | None, catalog: Catalog | None = None
) -> Workload | None:
    """The workload ``tel`` shows ``dep`` serving; None when ``unobservable(tel)`` says why not."""
    if tel is None or unobservable(dep, tel) is not None:
        return None
    rate = tel.signals["request_rate_per_s"]
    longest = dep.config.max_model_len or (catalog or get_catalog()).model(dep.config.model).max_context
    return Workload(
        input_len=length_distribution(
            tel.signals["prompt_tokens_per_s"] / rate, tel.signals.get("prompt_len_p99"), longest
        ),
        output_len=length_distribution(
            tel.signals["generation_tokens_per_s"] / rate, tel.signals.get("output_len_p99"), longest
        ),
        arrival_rate_per_s=rate,
    )


def with_observed_workload(
    dep: InferenceDeployment, tel: DeploymentTelemetry | None, catalog: Catalog | None = None
) -> tuple[InferenceDeployment, str | None]:
    """``dep`` with the workload its telemetry shows when it declares none, and a note saying so."""
    if dep.workload is not None:
        return dep, None
    wl = observed_workload(dep, tel, catalog)
    if wl is None:
        why = unobservable(dep, tel)
        return (
            dep,
            f"{dep.ref.key}: no workload declared and none observed ({why}); declare one ({ANNOTATION})",
        )
    p99 = (
        {"input": tel.signals.get("prompt_len_p99"), "output": tel.signals.get("output_len_p99")}
        if tel
        else {}
    )
    shown = ", ".join(
        f"{name} {d.mean:.0f} tokens mean" + (f", p99 {p99[name]:.0f}" if p99.get(name) else ", p99 unknown")
        for name, d in (("input", wl.input_len), ("output", wl.output_len))
    )
    note = (
        f"{dep.ref.key}: no workload declared; sized for the observed one ({shown}; "
        f"{wl.arrival_rate_per_s:.2f} req/s; no prefix sharing assumed; lengths capped at {wl.input_len.max} tokens)"
    )
    return dep.model_copy(update={"workload": wl}), note
