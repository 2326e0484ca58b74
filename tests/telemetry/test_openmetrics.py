from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from servewise.telemetry.openmetrics import history_twin, write_history
from servewise.testing.prometheus import PrometheusUnavailable, binaries

END = 1763899200.0


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("om") / "edge.om"
    sim = history_twin("edge", hours=0.25, step_s=30, end_s=END)
    res = write_history(sim, out, hours=0.25, step_s=30)
    assert res.steps == 30 and res.end_s == pytest.approx(END)
    return out


_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+) (\S+)$")


def _parse(text: str) -> tuple[dict[str, str], dict[tuple[str, str], list[tuple[float, float]]]]:
    types: dict[str, str] = {}
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            assert name not in types, f"family {name} is split"
            types[name] = typ
        elif not line.startswith("#"):
            m = _LINE.match(line)
            assert m, line
            series[(m.group(1), m.group(2))].append((float(m.group(4)), float(m.group(3))))
    return types, series


def test_history_is_openmetrics_with_monotone_counters_and_cumulative_buckets(history: Path) -> None:
    text = history.read_text()
    assert text.endswith("# EOF\n")
    types, series = _parse(text)
    for name in (
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "DCGM_FI_DEV_GPU_UTIL",
        "kube_pod_owner",
    ):
        assert types[name] == "gauge"
    assert (
        types["vllm:num_preemptions"] == "counter"
        and types["vllm:time_to_first_token_seconds"] == "histogram"
    )
    assert all(k[0].startswith(tuple(types)) for k in series)
    for (name, labels), points in series.items():
        assert 'namespace="' in labels or name.startswith("kube_node"), name
        times = [t for t, _ in points]
        assert times == sorted(times) and len(times) == 31, f"{name} points out of order"
        if name.endswith(("_total", "_bucket", "_count", "_sum")):
            values = [v for _, v in points]
            assert values == sorted(values), f"{name} decreases"
    # buckets are cumulative: at every point, a larger le never has fewer observations
    buckets: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    for (name, labels), points in series.items():
        if name == "vllm:time_to_first_token_seconds_bucket":
            group, le = labels.rsplit(',le="', 1)
            for t, v in points:
                buckets[(group, t)].append((float(le.rstrip('"')), v))
    assert buckets
    for rows in buckets.values():
        counts = [v for _, v in sorted(rows)]
        assert counts == sorted(counts) and len(counts) == 23
    observed = sum(
        max(v for _, v in pts) for (n, _), pts in series.items() if n.endswith("request_success_total")
    )
    assert observed > 0


def test_promtool_accepts_the_history(history: Path, tmp_path: Path) -> None:
    try:
        _, promtool = binaries()
    except PrometheusUnavailable as exc:
        pytest.skip(str(exc))
    proc = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(history), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert any((tmp_path / "data").iterdir())


def test_export_history_to_a_path_that_cannot_be_written_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the history is made, naming the flag and the path (exit 2, no traceback)."""
    from typer.testing import CliRunner

    from servewise.cli import app
    from servewise.errors import InputError

    monkeypatch.setenv("SERVEWISE_HOME", str(tmp_path / "home"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for out, cause in ((blocker / "h.om", "Not a directory"), (tmp_path, "Is a directory")):
        with pytest.raises(InputError, match=re.escape(f"cannot write {out}: {cause}")) as err:
            CliRunner().invoke(
                app, ["sim", "export-history", "--out", str(out), "--hours", "0.1"], catch_exceptions=False
            )
        assert err.value.field == "--out"
