"""``TelemetrySource`` over a real Prometheus (prometheus-api-client).

One PromQL query per signal for the whole fleet (see ``servewise.telemetry.promql``), run in a small
thread pool. A series that is absent, NaN or infinite leaves the signal in the deployment's
``missing`` list, never a made-up 0. Timeouts, connection errors and 5xx are retried with tenacity
(bounded), then raised as ``BackendUnavailableError``; a 4xx or a malformed answer raises an error
that names the query.

Which engine exports a deployment's metrics is read from Prometheus, not configured: by default
(``names=None``) one count query per engine (vLLM, TGI, SGLang) asks whose running-requests or
request-counter series the window or the peak lookback holds, and each engine found is read with
its own names, so a fleet that mixes engines is read whole. ``names=`` reads one engine only. A
deployment with GPU series only has no ``engine``.

A Prometheus behind authentication takes a bearer token from ``SERVEWISE_PROMETHEUS_TOKEN`` (or
``headers=``); a 401 or 403 says which is missing or refused, never the token.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential
from urllib3.util.retry import Retry

from servewise.domain import POD_PREFIX, SIGNALS, DeploymentTelemetry, SignalEvidence, TelemetrySnapshot
from servewise.errors import BackendUnavailableError, InputError, PermanentError, ServewiseError
from servewise.telemetry.names import (
    DEFAULT_LABELS,
    ENGINE_NAMES,
    KSM_NAMES,
    VLLM_NAMES,
    EngineNames,
    LabelMap,
)
from servewise.telemetry.promql import (
    PEAK_LOOKBACK,
    PEAK_SIGNALS,
    PromQLBuilder,
    window_seconds,
)

Key = tuple[str, str]
log = logging.getLogger(__name__)
# a bearer token for a Prometheus behind authentication (an OAuth proxy, a managed service), sent with
# every query when no ``headers=`` are given
TOKEN_ENV = "SERVEWISE_PROMETHEUS_TOKEN"


class MalformedResponseError(PermanentError):
    """Prometheus answered something that is not a PromQL vector result."""


PEAK_SPAN = "peak_span_s"  # the job answering how much of the peak lookback holds data
WINDOW_SPAN = "window_span_s"  # the job answering how much of the window holds data
_WHAT = {PEAK_SPAN: "the peak lookback's coverage", WINDOW_SPAN: "the window's coverage"}
KSM_SIGNALS = frozenset({"replicas_available"})  # kube-state-metrics' own, of every workload
# DCGM's and kube-state-metrics', whatever the engine
ENGINE_FREE_SIGNALS = frozenset({"gpu_utilization", "gpu_memory_used_bytes", *KSM_SIGNALS})


MIN_HELD_S = 120.0  # less history than this is too little to read rates from
# engine series whose newest sample is older than this (a few scrape intervals, and the 30 s step
# their time is read at) ended inside the window: the exporter, or its scrape, is down
ENDED_S = 180.0
HELD_STEP_S = 30  # a partly held window's rates are re-read over its held seconds, rounded down to this


def _held_rates_note(held: float, window: str, window_s: float, span: int | None) -> str:
    said = f"Prometheus holds {held:.0f} s of the {window} window for it"
    if span is None:
        return (
            f"{said}: rates (requests and tokens per second) read low, by about {1 - held / window_s:.0%},"
            " until it is covered; wait, or read a shorter --window"
        )
    return (
        f"{said}: rates (requests and tokens per second) are read over the last {span} s instead"
        f" (over the window they read {1 - held / window_s:.0%} low)"
    )


class PrometheusSource:
    """Fleet telemetry from Prometheus; ``names`` pins one engine's metric names (default: every
    engine found), ``label_map`` adapts it to relabeled setups."""

    def __init__(
        self,
        url: str,
        *,
        names: EngineNames | None = None,
        label_map: LabelMap = DEFAULT_LABELS,
        use_owners: bool | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        parallel: int = 4,
        headers: dict[str, str] | None = None,
        peak_lookback: str = PEAK_LOOKBACK,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise InputError(
                f"Prometheus URL must start with http:// or https://, got {url!r}", field="--prometheus"
            )
        self.url = url.rstrip("/")
        self.name = f"prometheus:{self.url}"
        self.names, self.label_map = names, label_map
        self.timeout_s, self.retries, self.parallel = timeout_s, max(0, retries), max(1, parallel)
        self._use_owners = use_owners
        try:
            window_seconds(peak_lookback)
        except InputError as exc:
            raise InputError(f"peak lookback: {exc}", field="peak_lookback") from exc
        self.peak_lookback = peak_lookback
        token = os.environ.get(TOKEN_ENV, "").strip()
        if headers is None and token:
            headers = {"Authorization": f"Bearer {token}"}
        self._authorized = bool(headers and any(k.lower() == "authorization" for k in headers))
        self._client = PrometheusConnect(
            url=self.url, headers=headers, retry=Retry(total=0), timeout=timeout_s
        )

    # -- queries ---------------------------------------------------------------------------------
    def query(self, promql: str, *, at: datetime | None = None) -> list[dict[str, Any]]:
        """One instant query, retried on timeouts/5xx; returns the raw vector result."""

        @retry(
            retry=retry_if_exception_type(BackendUnavailableError),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        def attempt() -> list[dict[str, Any]]:
            return self._query_once(promql, at)

        return attempt()

    def _query_once(self, promql: str, at: datetime | None) -> list[dict[str, Any]]:
        params = {"time": f"{at.timestamp():.3f}"} if at is not None else None
        try:
            result = self._client.custom_query(promql, params=params, timeout=self.timeout_s)
        except requests.Timeout as exc:
            raise BackendUnavailableError(
                f"Prometheus at {self.url} timed out after {self.timeout_s:g} s"
            ) from exc
        except requests.ConnectionError as exc:  # the message embeds the whole encoded query: keep it short
            reason = str(exc).rsplit("Caused by ", 1)[-1][:200]
            while reason.endswith(")") and reason.count(")") > reason.count("("):
                reason = reason[:-1]
            raise BackendUnavailableError(
                f"Prometheus at {self.url} unreachable: {reason}; check that it runs and that the URL is"
                " its base (e.g. http://prometheus.monitoring:9090), reachable from here"
            ) from exc
        except PrometheusApiClientException as exc:
            text = str(exc)
            if "Status Code 5" in text or "Status Code 429" in text:
                raise BackendUnavailableError(f"Prometheus at {self.url}: {text[:300]}") from exc
            if "Status Code 401" in text or "Status Code 403" in text:  # a proxy's or the service's own
                code = "401" if "Status Code 401" in text else "403"
                said = (
                    f"Prometheus at {self.url} refused the credentials sent (HTTP {code}): check the token in"
                    f" {TOKEN_ENV} (or the headers given), and that it may read this Prometheus"
                    if self._authorized
                    else f"Prometheus at {self.url} needs authentication (HTTP {code}): set {TOKEN_ENV} to a"
                    " bearer token it accepts"
                )
                raise InputError(said, field="--prometheus") from exc
            if "Status Code 404" in text:  # another server (an exporter, a console) or a wrong path
                raise InputError(
                    f"no Prometheus HTTP API at {self.url} (404 for /api/v1/query): give the Prometheus "
                    "server's base URL",
                    field="--prometheus",
                ) from exc
            raise InputError(f"Prometheus rejected the query: {text[:300]}", source=promql) from exc
        except (ValueError, KeyError, TypeError) as exc:  # body is not the JSON the API promises
            raise MalformedResponseError(f"malformed Prometheus response to query {promql!r}: {exc}") from exc
        if not isinstance(result, list):
            raise MalformedResponseError(f"malformed Prometheus response to query {promql!r}: not a vector")
        return result

    def _owners_present(self, at: datetime | None) -> bool:
        if self._use_owners is not None:
            return self._use_owners
        if not self.label_map.deployment:
            return True
        return bool(self.query(f"count({KSM_NAMES.replicaset_owner})", at=at))

    # -- snapshot --------------------------------------------------------------------------------
    def engines_present(self, window: str, at: datetime | None = None) -> list[EngineNames]:
        """The engines with a running-requests or request-counter series in the window or the peak
        lookback (a deployment gone from the window keeps its peaks), in ``ENGINE_NAMES`` order: one
        count query each, per metric name (a name regex under ``last_over_time`` could collide where
        a Prometheus drops the names). An engine whose probe fails is read anyway: its read decides."""
        span = window if window_seconds(window) >= window_seconds(self.peak_lookback) else self.peak_lookback
        jobs = {}
        for names in ENGINE_NAMES.values():
            metrics = (*(names.running or ()), *(names.requests or ()))
            jobs[names.engine] = " or ".join(f"count(last_over_time({m}[{span}]))" for m in metrics)
        found, failed = [], []
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            futures = {engine: pool.submit(self.query, q, at=at) for engine, q in jobs.items()}
            for engine, future in futures.items():
                try:
                    present = bool(future.result())
                except ServewiseError as exc:
                    failed.append((engine, exc))
                    present = True
                if present:
                    found.append(ENGINE_NAMES[engine])
        if failed and len(failed) == len(jobs):  # Prometheus itself is down or wrong: say that
            raise failed[0][1]
        for engine, error in failed:
            log.warning("the probe for %s metrics failed, reading them anyway: %s", engine, error)
        return found

    def snapshot(self, *, window: str = "15m", at: datetime | None = None) -> TelemetrySnapshot:
        window_seconds(window)
        owners = self._owners_present(at)
        queries = 1 if self._use_owners is None and self.label_map.deployment else 0
        if self.names is not None:
            engines = found = [self.names]
        else:  # none found: read as vLLM, so every engine signal is listed missing
            found = self.engines_present(window, at)
            engines = found or [VLLM_NAMES]
            queries += len(ENGINE_NAMES)
        # every engine's queries at once; those that do not depend on the engine (GPU, kube-state-
        # metrics) are asked once and shared
        sent: dict[str, Future[list[dict[str, Any]]]] = {}
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:

            def ask(promql: str) -> Future[list[dict[str, Any]]]:
                if promql not in sent:
                    sent[promql] = pool.submit(self.query, promql, at=at)
                return sent[promql]

            ended: dict[Key, float] = {}  # seconds since the newest engine sample, where past ENDED_S
            collects = [self._send(names, window, owners, ask, ended) for names in engines]
            reads = [collect() for collect in collects]
        queries += len(sent)
        deployments = _merge(reads)
        notes = []
        before = (at or datetime.now(UTC)).isoformat(timespec="seconds")
        stale = {
            key: ended[key] for key in ((d.namespace, d.deployment) for d in deployments) if key in ended
        }
        if stale:
            notes.append(_ended_note(stale, window, before if at else "now"))
        # engine series there, but none mapped: say that, not "no series" (one more query, only then)
        pods = 0
        if not deployments and found:
            pods = self._engine_pods(found, window, at)
            queries += 1
        if pods:
            notes.append(self._unmapped_note(pods, window, before, owners))
        elif not deployments:
            notes.append(
                f"no deployment has engine (vLLM, TGI, SGLang) or GPU (DCGM) series in the {window} window"
                f" before {before}: check that Prometheus scrapes them (and has for the window) and that"
                " kube-state-metrics maps their pods"
            )
        return TelemetrySnapshot(
            source=self.name,
            taken_at=at or datetime.now(UTC),
            window=window,
            deployments=deployments,
            queries=queries,
            notes=notes,
        )

    def _engine_pods(self, engines: list[EngineNames], window: str, at: datetime | None) -> int:
        """How many pods have a running-requests or request-counter series of ``engines`` in the window."""
        by = f"{self.label_map.namespace}, {self.label_map.pod}"
        metrics = [m for n in engines for m in (*(n.running or ()), *(n.requests or ()))]
        per_pod = " or ".join(f"count by ({by}) (last_over_time({m}[{window}]))" for m in metrics)
        try:
            result = self.query(f"count({per_pod})", at=at)
            return int(float(result[0]["value"][1])) if result else 0
        except (ServewiseError, LookupError, TypeError, ValueError) as exc:  # the note without the count
            log.warning("could not count the pods with engine series: %s", exc)
            return 0

    def _unmapped_note(self, pods: int, window: str, before: str, owners: bool) -> str:
        said = (
            f"engine series of {pods} pod{'s' if pods != 1 else ''} were found in the {window} window before"
            f" {before} but could not be mapped to a deployment"
        )
        if owners and self.label_map.deployment:
            return (
                f"{said}: kube-state-metrics is there (kube_replicaset_owner), so pods map through its"
                f" owners and --deployment-label {self.label_map.deployment} is not used; check that its"
                " kube_pod_owner series name these pods (same namespace and pod labels)"
            )
        if owners:
            return (
                f"{said}: no kube-state-metrics owner series (kube_pod_owner, kube_replicaset_owner) name"
                " their pods; scrape kube-state-metrics, or name the pod label that carries the deployment"
                " with --deployment-label LABEL (e.g. --deployment-label app; LabelMap(deployment=...))"
            )
        return (
            f"{said}: their series have no {self.label_map.deployment!r} label (--deployment-label);"
            " name the pod label that carries the deployment"
        )

    def _send(
        self,
        names: EngineNames,
        window: str,
        owners: bool,
        ask: Callable[[str], Future[list[dict[str, Any]]]],
        ended: dict[Key, float],
    ) -> Callable[[], list[DeploymentTelemetry]]:
        """Send the queries of ``names`` (``ask`` sends one) and return what collects their answers:
        every deployment with a series under ``names`` (or a GPU series). Every engine's queries are
        sent before any answer is awaited. Deployments whose engine series ended inside the window go
        to ``ended`` (seconds since their newest sample)."""
        builder = PromQLBuilder(names, self.label_map, use_owners=owners)
        plan = builder.plan(window, self.peak_lookback)
        pod_jobs = {f"{POD_PREFIX}{sig}": q for sig, q in plan.pod_queries.items()}
        jobs = {**plan.queries, "replicas": plan.replicas_query, **pod_jobs}
        if plan.peak_span_query:
            jobs[PEAK_SPAN] = plan.peak_span_query
        if plan.window_span_query:
            jobs[WINDOW_SPAN] = plan.window_span_query
        futures = {sig: ask(q) for sig, q in jobs.items()}

        def collect() -> list[DeploymentTelemetry]:
            results: dict[str, list[dict[str, Any]]] = {}
            failed: dict[str, ServewiseError] = {}
            for sig, future in futures.items():
                try:
                    results[sig] = future.result()
                except ServewiseError as exc:  # a day-long subquery may time out: only it goes missing
                    if sig not in (*PEAK_SIGNALS, PEAK_SPAN, WINDOW_SPAN):
                        raise
                    results[sig], failed[sig] = [], exc
            per_pod = {sig: _by_pod(results.pop(sig), jobs[sig]) for sig in pod_jobs}
            edges: dict[bool, list[dict[str, Any]]] = {True: [], False: []}  # edge="last" or "first"
            for item in results.pop(WINDOW_SPAN, []):
                edges[isinstance(item, dict) and item.get("metric", {}).get("edge") == "last"].append(item)
            covered = _by_key(edges[False], jobs.get(WINDOW_SPAN, ""))
            for key, age in _by_key(edges[True], jobs.get(WINDOW_SPAN, "")).items():
                if age > ENDED_S:
                    ended[key] = age
            values: dict[str, dict[Key, float]] = {}
            for sig, result in results.items():
                values[sig] = _by_key(result, jobs[sig])
            replicas = values.pop("replicas")
            spans = values.pop(PEAK_SPAN, {})

            window_s = window_seconds(window)

            @functools.cache
            def rates_over(span: int) -> dict[str, tuple[str, dict[Key, float]]] | None:
                """The counter rates over the last ``span`` seconds (None: not answered)."""
                asked = {sig: (q, ask(q)) for sig, q in builder.rate_queries(f"{span}s").items()}
                try:
                    return {sig: (q, _by_key(future.result(), q)) for sig, (q, future) in asked.items()}
                except ServewiseError as exc:
                    log.warning("could not read rates over the last %d s: %s", span, exc)
                    return None

            def held_rates(tel: DeploymentTelemetry, span: int) -> bool:
                """A partly held window's rates, re-read over the ``span`` seconds it holds (rate()
                divided their increase by the whole window); False when that could not be read."""
                answers = rates_over(span)
                key = (tel.namespace, tel.deployment)
                if answers is None or not any(key in values for _, values in answers.values()):
                    return False
                for sig, (query, values) in answers.items():
                    value = values.get(key)
                    if sig in tel.signals and value is not None:
                        tel.signals[sig] = value
                        tel.evidence[sig] = SignalEvidence(query=query, window=f"{span}s")
                return True

            # windows held only in part: seconds held, and the span their rates are re-read over
            # (None: too little to read from)
            partial = {
                key: (held, int(held // HELD_STEP_S * HELD_STEP_S) if held >= MIN_HELD_S else None)
                for key, held in covered.items()
                if held < 0.9 * window_s and window_s - held > 60
            }
            for seconds in {s for _, s in partial.values() if s is not None}:  # all sent before any awaited
                for query in builder.rate_queries(f"{seconds}s").values():
                    ask(query)

            lookback_s = window_seconds(self.peak_lookback)
            unmeasured = [
                sig for sig in SIGNALS if sig not in plan.queries
            ]  # the engine exports no such metric
            # entries are the workloads with engine or GPU series: kube-state-metrics lists every workload
            # of the cluster (coredns too), so its own signals add none
            keys = sorted({k for sig, got in values.items() if sig not in KSM_SIGNALS for k in got})
            deployments = []
            for ns, dep in keys:
                tel = DeploymentTelemetry(deployment=dep, namespace=ns, engine=names.engine)
                rep = replicas.get((ns, dep))
                tel.replicas = int(round(rep)) if rep is not None else None
                for sig in SIGNALS:
                    value = values.get(sig, {}).get((ns, dep))
                    if value is None:
                        tel.missing.append(sig)
                    else:
                        tel.signals[sig] = value
                        span = window
                        if sig in PEAK_SIGNALS:  # the lookback, or the part of it that holds data
                            held = spans.get((ns, dep))
                            span = f"{round(held)}s" if held and held < lookback_s else self.peak_lookback
                        tel.evidence[sig] = SignalEvidence(query=plan.queries[sig], window=span)
                tel.notes.extend(f"{_WHAT.get(sig, sig)}: query failed: {exc}" for sig, exc in failed.items())
                if (ns, dep) in partial:
                    held, over = partial[(ns, dep)]
                    if over is not None and not held_rates(tel, over):
                        over = None
                    tel.notes.append(_held_rates_note(held, window, window_s, over))
                if not _engine_signals(tel):  # GPU series only: no engine to name
                    tel.engine = None
                elif unmeasured:
                    tel.notes.append(f"engine {names.engine} has no metric for {', '.join(unmeasured)}")
                pods: set[str] = set()
                for sig, by_pod in per_pod.items():  # pod/<pod>/<signal>
                    for pod, value in sorted(by_pod.get((ns, dep), {}).items()):
                        tel.signals[f"{POD_PREFIX}{pod}/{sig[len(POD_PREFIX) :]}"] = value
                        pods.add(pod)
                if tel.replicas is not None and len(pods) > tel.replicas:
                    tel.notes.append(
                        f"pods came or went within the {window} window ({len(pods)} pods' series for {tel.replicas} "
                        "replicas): rate() extrapolates each series that began or ended inside it on its own, "
                        "so a p99 can read a histogram bucket high"
                    )
                deployments.append(tel)
            return deployments

        return collect


def _ended_note(ended: dict[Key, float], window: str, before: str) -> str:
    """Which deployments' engine series ended inside the window, and how long before its end."""
    minutes = sorted({round(age / 60) for age in ended.values()})
    when = f"{minutes[0]}" if len(minutes) == 1 else f"{minutes[0]}-{minutes[-1]}"
    names = [f"{ns}/{dep}" for ns, dep in sorted(ended)]
    listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"engine series of {len(names)} deployment{'s' if len(names) != 1 else ''} ({listed}) ended {when} min"
        f" before {before}; rates cover only part of the {window} window (they read low): is the exporter,"
        " or its scrape, down?"
    )


def _engine_signals(tel: DeploymentTelemetry) -> int:
    return sum(1 for sig in tel.signals if sig not in ENGINE_FREE_SIGNALS and not sig.startswith(POD_PREFIX))


def _merge(reads: list[list[DeploymentTelemetry]]) -> list[DeploymentTelemetry]:
    """One entry per deployment: each engine's read holds every deployment with a GPU series, so a
    deployment is its engine's, the read with the most engine signals (the first on a tie)."""
    if len(reads) == 1:
        return reads[0]
    by_key: dict[Key, list[DeploymentTelemetry]] = {}
    for read in reads:
        for tel in read:
            by_key.setdefault((tel.namespace, tel.deployment), []).append(tel)
    merged = []
    for key in sorted(by_key):
        found = by_key[key]
        best = max(found, key=_engine_signals)  # max keeps the first of equals
        also = [str(t.engine) for t in found if t is not best and _engine_signals(t) > 0]
        if also:
            best.notes.append(
                f"series of engines {best.engine} and {', '.join(also)} under one deployment: "
                f"read as {best.engine}, which has the most signals"
            )
        merged.append(best)
    return merged


def _by_pod(result: list[dict[str, Any]], promql: str) -> dict[Key, dict[str, float]]:
    """``(namespace, deployment) -> {pod: value}`` of a vector result by pod."""
    out: dict[Key, dict[str, float]] = {}
    for item in result:
        pod = item.get("metric", {}).get("pod") if isinstance(item, dict) else None
        for key, value in _by_key([item], promql).items():
            if pod:
                out.setdefault(key, {})[str(pod)] = value
    return out


def _by_key(result: list[dict[str, Any]], promql: str) -> dict[Key, float]:
    """``(namespace, deployment) -> value`` of a vector result; NaN/Inf values are dropped."""
    out: dict[Key, float] = {}
    for item in result:
        try:
            metric, (_, raw) = item["metric"], item["value"]
            value = float(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponseError(f"malformed sample {item!r} in the answer to {promql!r}") from exc
        ns, dep = metric.get("namespace"), metric.get("deployment")
        if not ns or not dep or not math.isfinite(value):
            continue
        out[(ns, dep)] = value
    return out
