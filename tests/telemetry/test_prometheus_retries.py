"""PrometheusSource against a tiny local HTTP server that fails first (5xx, timeouts, garbage)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servewise.domain import SIGNALS
from servewise.errors import BackendUnavailableError, InputError
from servewise.telemetry.names import TGI_NAMES, VLLM_NAMES
from servewise.telemetry.prometheus import MalformedResponseError, PrometheusSource

VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"namespace": "a", "deployment": "x"}, "value": [1.0, "2.5"]},
            {"metric": {"namespace": "a", "deployment": "y"}, "value": [1.0, "NaN"]},
        ],
    },
}


class Script:
    """What the server answers, in order; the last entry repeats."""

    def __init__(self, *answers: tuple[str, object]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def next(self) -> tuple[str, object]:
        self.calls += 1
        return self.answers[min(self.calls - 1, len(self.answers) - 1)]


@pytest.fixture
def server() -> Iterator[tuple[str, list[Script]]]:
    holder: list[Script] = [Script(("ok", VECTOR))]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            kind, body = holder[0].next()
            if kind == "sleep":
                time.sleep(float(body))  # type: ignore[arg-type]
                kind, body = "ok", VECTOR
            status = {"ok": 200, "garbage": 200}.get(kind, int(kind) if kind.isdigit() else 500)
            payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            with contextlib.suppress(BrokenPipeError):
                self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", holder
    httpd.shutdown()


def test_5xx_is_retried_then_succeeds(server: tuple[str, list[Script]]) -> None:
    url, holder = server
    holder[0] = Script(("503", "unavailable"), ("502", "bad gateway"), ("ok", VECTOR))
    result = PrometheusSource(url, retries=3).query("up")
    assert holder[0].calls == 3 and result[0]["value"][1] == "2.5"


def test_timeouts_are_retried(server: tuple[str, list[Script]]) -> None:
    url, holder = server
    holder[0] = Script(("sleep", 1.0), ("ok", VECTOR))
    result = PrometheusSource(url, timeout_s=0.3, retries=2).query("up")
    assert holder[0].calls == 2 and len(result) == 2


def test_retries_are_bounded(server: tuple[str, list[Script]]) -> None:
    url, holder = server
    holder[0] = Script(("500", "boom"))
    with pytest.raises(BackendUnavailableError, match="500"):
        PrometheusSource(url, retries=2).query("up")
    assert holder[0].calls == 3


def test_bad_query_and_malformed_answers_name_the_query(server: tuple[str, list[Script]]) -> None:
    url, holder = server
    holder[0] = Script(("400", {"status": "error", "error": "parse error"}))
    with pytest.raises(InputError, match="sum by oops"):
        PrometheusSource(url).query("sum by oops")
    assert holder[0].calls == 1  # a 4xx is not retried
    holder[0] = Script(("garbage", "<html>not json</html>"))
    with pytest.raises(MalformedResponseError, match="vllm:num_requests_running"):
        PrometheusSource(url).query("vllm:num_requests_running")


def test_nan_and_malformed_samples_in_a_snapshot(server: tuple[str, list[Script]]) -> None:
    url, _ = server
    snap = PrometheusSource(url, names=VLLM_NAMES).snapshot(window="5m")
    x = snap.for_deployment("x", "a")
    assert x is not None and x.signals["requests_running"] == 2.5 and x.replicas == 2
    assert snap.for_deployment("y", "a") is None  # NaN everywhere: no value invented
    assert (
        snap.queries == len(SIGNALS) + 5
    )  # signals, replicas, 2 per-pod queries, the peak's span, the window's


def test_an_engine_without_a_metric_says_so_once(server: tuple[str, list[Script]]) -> None:
    url, _ = server
    x = PrometheusSource(url, names=TGI_NAMES).snapshot(window="5m").for_deployment("x", "a")
    assert x is not None and x.engine == "tgi"
    # one note for what TGI does not export at all (not one per signal)
    assert [n for n in x.notes if "no metric" in n] == [
        "engine tgi has no metric for kv_cache_usage, preemptions_per_s, prefix_cache_hit_rate, "
        "ttft_p50_ms, ttft_p99_ms"
    ]


def test_a_server_that_is_not_prometheus_is_named(server: tuple[str, list[Script]]) -> None:
    url, holder = server
    holder[0] = Script(("404", "<!DOCTYPE HTML><html>404 page not found</html>"))
    with pytest.raises(InputError, match="no Prometheus HTTP API at") as err:
        PrometheusSource(url).snapshot(window="5m")
    assert err.value.field == "--prometheus" and "DOCTYPE" not in str(err.value)


def test_unreachable_prometheus_is_retryable() -> None:
    src = PrometheusSource("http://127.0.0.1:9", retries=1, timeout_s=0.5)
    with pytest.raises(BackendUnavailableError, match="unreachable") as err:
        src.snapshot()  # every engine probe failed: Prometheus' own error, not a read of each engine
    assert str(err.value).count("(") == str(err.value).count(")")
    assert "check that it runs and that the URL is its base" in str(err.value)  # what to do next


def test_url_is_validated() -> None:
    with pytest.raises(InputError, match="--prometheus"):
        PrometheusSource("localhost:9090")


def test_a_failing_peak_query_loses_only_the_peaks() -> None:
    """The day-long peak subqueries are the heaviest: one that fails (here 422, as a too-long
    query or a many-to-many join would) leaves the peaks missing with a note, not the snapshot."""
    from urllib.parse import parse_qs, urlparse

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
            failing = "[1d:5m]" in query
            body = (
                {"status": "error", "errorType": "execution", "error": "too many samples"}
                if failing
                else VECTOR
            )
            self.send_response(422 if failing else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(body).encode())

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        snap = PrometheusSource(f"http://127.0.0.1:{httpd.server_address[1]}", retries=0).snapshot(
            window="5m"
        )
    finally:
        httpd.shutdown()
    x = snap.for_deployment("x", "a")
    assert x is not None and x.signals["requests_running"] == 2.5
    assert {"request_rate_peak_per_s", "requests_waiting_peak"} <= set(x.missing)
    assert any(n.startswith("request_rate_peak_per_s: query failed: ") for n in x.notes), x.notes


def test_a_prometheus_behind_authentication_says_so_and_takes_a_bearer_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """401 without a token, 403 for a wrong one (not "Prometheus rejected the query: HTTP Status Code
    401"); SERVEWISE_PROMETHEUS_TOKEN is sent as a bearer token, and never shown."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            auth = self.headers.get("Authorization")
            seen.append(auth)
            status = 200 if auth == "Bearer s3cret" else 403 if auth else 401
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(VECTOR if status == 200 else {"error": "unauthorized"}).encode())

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        monkeypatch.delenv("SERVEWISE_PROMETHEUS_TOKEN", raising=False)
        with pytest.raises(
            InputError, match=r"needs authentication \(HTTP 401\): set SERVEWISE_PROMETHEUS_TOKEN"
        ):
            PrometheusSource(url).snapshot(window="5m")
        assert seen == [None] * len(seen) and len(seen) == 3  # one per engine probe, none retried
        monkeypatch.setenv("SERVEWISE_PROMETHEUS_TOKEN", "wrong")
        with pytest.raises(InputError, match=r"refused the credentials sent \(HTTP 403\)") as err:
            PrometheusSource(url).query("up")
        assert err.value.field == "--prometheus" and "wrong" not in str(err.value)
        monkeypatch.setenv("SERVEWISE_PROMETHEUS_TOKEN", "s3cret")
        assert PrometheusSource(url).query("up")[0]["value"][1] == "2.5"
        assert seen[-1] == "Bearer s3cret"
    finally:
        httpd.shutdown()
