"""PromQL for the fleet snapshot: one query per signal, aggregated by (namespace, deployment).

Pods map to workloads through kube-state-metrics owners (``kube_pod_owner`` ->
``kube_replicaset_owner`` for a Deployment's pods, ``kube_pod_owner`` alone for a StatefulSet's) or,
without them, through a pod label copied into ``deployment``; either way the workload's name is the
``deployment`` label of a snapshot.
Gauges join only the pods kube-state-metrics lists *now*, so series of replaced (stale) pods drop
out; rates and histograms join every pod that existed during the window, so requests served by a
pod replaced mid-window still count (``rate()`` handles each pod's counter from zero).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from servewise.errors import InputError
from servewise.telemetry.names import DCGM_NAMES, KSM_NAMES, DcgmNames, EngineNames, KsmNames, LabelMap

# Prometheus' duration: units largest first, each at most once (``1h30m``, ``1y``, ``90s``)
_WINDOW = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNIT_S = (365 * 86400, 604800, 86400, 3600, 60, 1, 0.001)  # y w d h m s ms, as Prometheus counts them


def window_seconds(window: str) -> float:
    """Seconds of a PromQL duration such as ``15m`` or ``1h30m``; errors name the input."""
    match = _WINDOW.match(window)
    seconds = sum(int(n) * unit for n, unit in zip(match.groups(), _UNIT_S, strict=True) if n) if match else 0
    if not seconds:
        raise InputError(
            f"window must be a PromQL duration like 30s, 15m, 1h or 1h30m, got {window!r}", field="--window"
        )
    return float(seconds)


@dataclass(frozen=True)
class QueryPlan:
    """The queries of one snapshot: ``signal -> PromQL`` plus how each value is scaled."""

    queries: dict[str, str]
    replicas_query: str
    # per-pod signal -> PromQL by (namespace, deployment, pod): ``pod/<pod>/<signal>`` in a snapshot
    pod_queries: dict[str, str] = field(default_factory=dict)
    # seconds of the peak lookback that hold requests (a deployment younger than the lookback has fewer)
    peak_span_query: str | None = None
    # seconds of the window that hold the engine's series: a Prometheus (or a deployment) younger
    # than the window reads its rates and averages low, as if idle before its first sample; and
    # (``edge="last"``) seconds since their newest sample: series that ended inside the window (an
    # exporter down) read their rates low too
    window_span_query: str | None = None


PEAK_LOOKBACK = "1d"  # a daily cycle; weekly ones need "7d"
PEAK_STEP = "5m"
PEAK_SIGNALS = ("request_rate_peak_per_s", "requests_waiting_peak")  # over the lookback, not the window
# Counter rates over the window: rate() divides a series' increase by the whole window, so a
# window only partly held reads them low (``PrometheusSource`` rescales them to the part held).
RATE_SIGNALS = ("request_rate_per_s", "prompt_tokens_per_s", "generation_tokens_per_s", "preemptions_per_s")


class PromQLBuilder:
    def __init__(
        self,
        names: EngineNames,
        labels: LabelMap,
        *,
        use_owners: bool = True,
        dcgm: DcgmNames = DCGM_NAMES,
        ksm: KsmNames = KSM_NAMES,
    ) -> None:
        if not use_owners and not labels.deployment:
            raise InputError("without kube-state-metrics owners, label_map.deployment must name a pod label")
        self.names, self.labels, self.use_owners, self.dcgm, self.ksm = names, labels, use_owners, dcgm, ksm

    # -- pieces ----------------------------------------------------------------------------------
    @staticmethod
    def selector(names: tuple[str, ...], suffix: str = "") -> str:
        """A raw selector of every name (series keep ``__name__``, so both names never collide)."""
        if len(names) == 1:
            return names[0] + suffix
        alts = "|".join(re.escape(n + suffix) for n in names)
        return f'{{__name__=~"{alts}"}}'

    @staticmethod
    def each(names: tuple[str, ...], expr: Callable[[str], str], suffix: str = "") -> str:
        """``expr`` of each name, the preferred (newer) first: ``(f(new) or f(old))``.

        A function drops ``__name__``: over ``{__name__=~"new|old"}``, an engine that exports both
        names with the same labels (vLLM 0.9-0.11 sets ``kv_cache_usage_perc`` and
        ``gpu_cache_usage_perc`` together) gives two series of one label set and Prometheus refuses
        the whole query. ``or`` keeps every series of the newer name and, label set by label set,
        the older one's only where the newer is absent, before anything is summed or averaged: a pod
        counts once whichever names it exports, and a deployment (or a fleet) whose pods run old and
        new releases side by side counts every pod. The older name's series are left out
        ``unless ignoring(le)`` the newer has the label set: ``or`` alone matches on ``le`` too, so a
        histogram exported under both names with different bucket layouts (SGLang's inter-token
        histograms) had the old layout's extra bounds merged into the new one's buckets."""
        parts = [expr(n + suffix) for n in names]
        out = parts[0]
        for older in parts[1:]:
            out = f"({out} or ({older} unless ignoring(le) {out}))"
        return out

    def _normalize(self, expr: str, ns_label: str, pod_label: str) -> str:
        """Copy non-standard namespace/pod labels into ``namespace``/``pod``."""
        if pod_label != "pod":
            expr = f'label_replace({expr}, "pod", "$1", "{pod_label}", "(.+)")'
        if ns_label != "namespace":
            expr = f'label_replace({expr}, "namespace", "$1", "{ns_label}", "(.+)")'
        return expr

    def pod_map(self, window: str | None = None) -> str:
        """Pod -> deployment series. With ``window``, every pod that existed during the window
        (for rates and histograms, so traffic served by pods replaced mid-window still counts);
        without, only the pods that exist now (for gauges: stale pods drop out)."""
        k = self.ksm

        def sel(name: str, kind: str) -> str:
            s = f'{name}{{owner_kind="{kind}"}}'
            return f"max_over_time({s}[{window}])" if window else s

        pods = f'label_replace({sel(k.pod_owner, "ReplicaSet")}, "replicaset", "$1", "owner_name", "(.+)")'
        rs = (
            "max by (namespace, replicaset, deployment) (label_replace("
            f'{sel(k.replicaset_owner, "Deployment")}, "deployment", "$1", "owner_name", "(.+)"))'
        )
        via_rs = f"max by (namespace, pod, deployment) ({pods} * on (namespace, replicaset) group_left (deployment) {rs})"
        # a StatefulSet owns its pods itself: its name is the workload's
        sts = (
            "max by (namespace, pod, deployment) (label_replace("
            f'{sel(k.pod_owner, "StatefulSet")}, "deployment", "$1", "owner_name", "(.+)"))'
        )
        return f"({via_rs} or {sts})"

    def _by_deployment(self, expr: str, window: str | None = None) -> str:
        if self.use_owners:
            return f"({expr}) * on (namespace, pod) group_left (deployment) {self.pod_map(window)}"
        assert self.labels.deployment
        return f'label_replace({expr}, "deployment", "$1", "{self.labels.deployment}", "(.+)")'

    def _engine(self, names: tuple[str, ...], func: str, window: str, suffix: str = "") -> str:
        inner = self.each(names, lambda name: f"{func}({name}[{window}])", suffix)
        expr = self._normalize(inner, self.labels.namespace, self.labels.pod)
        return self._by_deployment(expr, window if func == "rate" else None)

    def _dcgm(self, name: str, window: str) -> str:
        inner = f"avg_over_time({name}[{window}])"
        return self._by_deployment(self._normalize(inner, self.labels.dcgm_namespace, self.labels.dcgm_pod))

    def rate_queries(self, window: str) -> dict[str, str]:
        """The counter rates over ``window`` (``RATE_SIGNALS`` the engine has metrics for)."""
        n, by = self.names, "by (namespace, deployment)"
        metrics = (n.requests, n.prompt_tokens, n.generation_tokens, n.preemptions)
        return {
            signal: f"sum {by} ({self._engine(metric, 'rate', window)})"
            for signal, metric in zip(RATE_SIGNALS, metrics, strict=True)
            if metric
        }

    # -- the plan --------------------------------------------------------------------------------
    def plan(self, window: str, peak_lookback: str = PEAK_LOOKBACK) -> QueryPlan:
        """Every query of a snapshot over ``window``; the peak rate looks back ``peak_lookback``."""
        window_seconds(window)
        window_seconds(peak_lookback)
        n, by = self.names, "by (namespace, deployment)"
        q: dict[str, str] = {}
        sums = {"requests_running": n.running, "requests_waiting": n.waiting}
        for signal, metric in sums.items():
            if metric:
                q[signal] = f"sum {by} ({self._engine(metric, 'avg_over_time', window)})"
        if n.kv_usage:
            q["kv_cache_usage"] = f"avg {by} ({self._engine(n.kv_usage, 'avg_over_time', window)})"
        q.update(self.rate_queries(window))
        if n.prefix_hits and n.prefix_queries:  # no lookups (caching off): 0/0, missing
            hits, queries = (self._engine(m, "rate", window) for m in (n.prefix_hits, n.prefix_queries))
            q["prefix_cache_hit_rate"] = f"sum {by} ({hits}) / sum {by} ({queries})"
        # the busiest 5 minutes of the lookback (what a deployment must be sized for) and the longest
        # queue of any 5 minutes (was that peak all it could serve?)
        span = None
        for signal, metric, func in (
            ("request_rate_peak_per_s", n.requests, "rate"),
            ("requests_waiting_peak", n.waiting, "avg_over_time"),
        ):
            if metric:
                busiest = f"sum {by} ({self._engine(metric, func, PEAK_STEP)})"
                q[signal] = f"max_over_time(({busiest})[{peak_lookback}:{PEAK_STEP}])"
                if signal == "request_rate_peak_per_s":
                    step_s = window_seconds(PEAK_STEP)
                    span = f"count_over_time(({busiest})[{peak_lookback}:{PEAK_STEP}]) * {step_s:g}"
        quantiles = (
            ("ttft_p50_ms", n.ttft, 0.5), ("ttft_p99_ms", n.ttft, 0.99), ("itl_p50_ms", n.itl, 0.5),
            ("itl_p99_ms", n.itl, 0.99), ("e2e_p99_ms", n.e2e, 0.99),
        )  # fmt: skip
        for signal, metric, quantile in quantiles:
            if metric:
                buckets = self._engine(metric, "rate", window, "_bucket")
                q[signal] = (
                    f"histogram_quantile({quantile}, sum by (namespace, deployment, le) ({buckets})) * 1000"
                )
        for signal, metric in (("prompt_len_p99", n.prompt_len), ("output_len_p99", n.output_len)):
            if metric:  # tokens per request, read like the latencies
                buckets = self._engine(metric, "rate", window, "_bucket")
                q[signal] = f"histogram_quantile(0.99, sum by (namespace, deployment, le) ({buckets}))"
        q["gpu_utilization"] = f"avg {by} ({self._dcgm(self.dcgm.gpu_util, window)}) / 100"
        q["gpu_memory_used_bytes"] = f"avg {by} ({self._dcgm(self.dcgm.fb_used, window)}) * 1048576"
        if self.use_owners:
            sts = f'label_replace({self.ksm.statefulset_replicas}, "deployment", "$1", "statefulset", "(.+)")'
            replicas = f"max {by} ({self.ksm.spec_replicas}) or max {by} ({sts})"
            # replicas serving over the window (a scale-up or a crashed pod within it): rates per replica
            ready = f'label_replace(avg_over_time({self.ksm.statefulset_ready}[{window}]), "deployment", "$1", "statefulset", "(.+)")'
            q["replicas_available"] = (
                f"avg {by} (avg_over_time({self.ksm.available_replicas}[{window}])) or avg {by} ({ready})"
            )
        else:
            running = self._engine(n.running or n.requests or (), "last_over_time", window)
            replicas = f"count {by} (max by (namespace, deployment, pod) ({running}))"
            if n.running:  # the pods with a running-requests series, counted each minute of the window
                now = self._by_deployment(
                    self._normalize(self.selector(n.running), self.labels.namespace, self.labels.pod)
                )
                once = f"max by (namespace, deployment, pod) ({now})"  # a pod once, whatever its series
                q["replicas_available"] = f"avg_over_time((count {by} ({once}))[{window}:1m])"
        pods: dict[str, str] = {}
        if n.running:  # how the load balancer spreads requests (the replica-imbalance analyzer)
            pods["requests_running"] = (
                f"sum by (namespace, deployment, pod) ({self._engine(n.running, 'avg_over_time', window)})"
            )
        if n.requests:  # every pod that served requests in the window, replaced ones included
            pods["request_rate_per_s"] = (
                f"sum by (namespace, deployment, pod) ({self._engine(n.requests, 'rate', window)})"
            )
        covered = None
        if n.running or n.requests:
            # the span is read to one step: 30 s up to an hour, 1 m to a day (5 m read a pod 4-6 minutes
            # old as under the 2 minutes a rate needs), 5 m beyond (subquery points per series)
            seconds = window_seconds(window)
            step = "30s" if seconds <= 3600 else "1m" if seconds <= 86400 else "5m"

            def sample(func: str) -> str:  # the first or the newest sample's time in the window, per pod
                at = self.each(
                    n.running or n.requests or (), lambda name: f"{func}(timestamp({name})[{window}:{step}])"
                )
                return self._by_deployment(
                    self._normalize(at, self.labels.namespace, self.labels.pod), window
                )

            # one query, two series per deployment told apart by ``edge``
            covered = (
                f'label_replace(time() - min {by} ({sample("min_over_time")}), "edge", "first", "", "")'
                f' or label_replace(time() - max {by} ({sample("max_over_time")}), "edge", "last", "", "")'
            )
        return QueryPlan(
            queries=q,
            replicas_query=replicas,
            pod_queries=pods,
            peak_span_query=span,
            window_span_query=covered,
        )
