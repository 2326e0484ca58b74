"""A quantile beyond an engine's last finite bucket is shown as the lower bound it is."""

from __future__ import annotations

from servewise.domain.histograms import VLLM_TTFT_BUCKETS_S, beyond_last_bucket, shown_ms


def test_a_quantile_at_the_top_bucket_reads_at_least() -> None:
    top = 1000 * max(VLLM_TTFT_BUCKETS_S)
    assert shown_ms("vllm", "ttft_p99_ms", top) == ">= 2560000"
    assert shown_ms("vllm", "ttft_p99_ms", 412.4) == "412"
    assert beyond_last_bucket("vllm", "ttft_p99_ms", top) and not beyond_last_bucket(
        "vllm", "ttft_p99_ms", 1e3
    )
    # an engine whose bucket layout is not known here, or none at all: a plain value
    assert shown_ms("sglang", "ttft_p99_ms", top) == "2560000"
    assert shown_ms(None, "ttft_p99_ms", top) == "2560000"
