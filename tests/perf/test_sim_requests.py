"""Request generation for the simulator: arrivals, lengths, traces, prefix-cache hits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from servewise.domain import LengthDistribution, Workload
from servewise.errors import InputError
from servewise.perf.sim_requests import arrival_times, build_requests, read_trace


def test_poisson_and_gamma_arrivals_have_the_requested_rate_and_burstiness() -> None:
    rng = np.random.default_rng(0)
    poisson = arrival_times(Workload.fixed(10, 10, rate=4.0), 20000, rng)
    bursty = arrival_times(
        Workload(
            input_len=LengthDistribution.fixed(10), arrival_rate_per_s=4.0, arrival="gamma", burstiness=0.25
        ),
        20000,
        rng,
    )
    even = arrival_times(Workload(arrival_rate_per_s=4.0, arrival="uniform"), 5, rng)
    assert poisson[0] == 0.0 and np.all(np.diff(poisson) >= 0)
    assert 19999 / poisson[-1] == pytest.approx(4.0, rel=0.03)
    assert 19999 / bursty[-1] == pytest.approx(4.0, rel=0.1)
    cv = lambda t: np.std(np.diff(t)) / np.mean(np.diff(t))  # noqa: E731
    assert cv(poisson) == pytest.approx(1.0, rel=0.05)
    assert cv(bursty) == pytest.approx(2.0, rel=0.1)  # 1 / sqrt(shape)
    assert np.allclose(even, [0.0, 0.25, 0.5, 0.75, 1.0])


def test_trace_rows_are_read_sorted_and_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_len,output_len,user\n2.5,100,7,a\n1.0,50,3,b\n4.0,80,9,c\n")
    arrivals, inputs, outputs = read_trace(path)
    assert list(arrivals) == [1.0, 2.5, 4.0] and list(inputs) == [50, 100, 80] and list(outputs) == [3, 7, 9]
    reqs = build_requests(
        Workload(trace=str(path)), 2, np.random.default_rng(0), prefix_caching=False, max_model_len=1000
    )
    assert list(reqs.arrival_s) == [0.0, 1.5] and list(reqs.input_len) == [50, 100]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("arrival_s,input_len\n1,2\n", "lacks columns"),
        ("arrival_s,input_len,output_len\n0,10,5\n1,ten,5\n", "trace.csv:3, field 'input_len'"),
        ("arrival_s,input_len,output_len\n-1,10,5\n", "field 'arrival_s'"),
        ("arrival_s,input_len,output_len\n0,10,0\n", "field 'output_len'"),
        ("arrival_s,input_len,output_len\n", "no rows"),
    ],
)
def test_bad_trace_names_file_row_and_field(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(body)
    with pytest.raises(InputError, match=where):
        read_trace(path)


def test_missing_trace_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.csv"):
        read_trace(tmp_path / "nope.csv")


def test_prefix_hits_are_whole_blocks_and_never_the_whole_prompt() -> None:
    wl = Workload(
        input_len=LengthDistribution(kind="uniform", mean=200, std=100, min=1),
        prefix_share=1.0,
        arrival_rate_per_s=1.0,
    )
    reqs = build_requests(wl, 500, np.random.default_rng(1), prefix_caching=True, max_model_len=10_000)
    assert np.all(reqs.cached_len % 16 == 0)
    assert np.all(reqs.cached_len < reqs.input_len)
    assert np.all(reqs.input_len - reqs.cached_len <= 16)
    off = build_requests(wl, 500, np.random.default_rng(1), prefix_caching=False, max_model_len=10_000)
    assert not off.cached_len.any()


def test_closed_loop_knows_only_the_first_arrivals() -> None:
    reqs = build_requests(
        Workload.fixed(10, 10, concurrency=3),
        5,
        np.random.default_rng(0),
        prefix_caching=False,
        max_model_len=100,
    )
    assert reqs.closed_loop_clients == 3
    assert list(reqs.arrival_s[:3]) == [0.0, 0.0, 0.0] and np.all(np.isinf(reqs.arrival_s[3:]))
