"""Small studies built in memory, so tests run in seconds."""

from __future__ import annotations

from typing import Any

from servewise.studies.study_file import Study, study_from_dict


def small_study_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "test-small",
        "question": "Which GPU and batch limit serve Llama 3.1 8B cheapest under 40 ms TPOT?",
        "seed": 7,
        "evaluator": "analytical",
        "axes": {
            "gpu": ["l4", "a10g", "l40s", "h100-sxm"],
            "weights": ["bf16", "fp8"],
            "max_num_seqs": [8, 32, 128],
        },
        "fixed": {"model": "llama-3.1-8b"},
        "workloads": {
            "chat": {"input_len": {"mean": 1024}, "output_len": {"mean": 256}, "arrival_rate_per_s": 10}
        },
        "objective": {"metric": "cost_per_1m_output_tokens"},
        "constraints": ["tpot_ms <= 40"],
    }
    data.update(overrides)
    return data


def make_study(**overrides: Any) -> Study:
    return study_from_dict(small_study_dict(**overrides), source="test-study.yaml")
