"""Expand a compact ``generate:`` block of a scenario into explicit deployments (seeded).

Used by the ``large`` scenario: templates (model, parallelism, replica range, per-replica load) are
drawn by weight and placed on the listed pools while GPUs are free, so the result is a plausible,
reproducible fleet of hundreds of deployments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servewise.errors import InputError


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str
    pools: list[str] = Field(min_length=1)
    tensor_parallel: int = 1
    replicas: tuple[int, int] = (1, 4)
    rate_per_replica: tuple[float, float] = (0.5, 4.0)
    input_mean: tuple[float, float] = (300, 3000)
    output_mean: tuple[float, float] = (100, 600)
    weight: float = Field(default=1.0, gt=0)
    max_num_seqs: list[int] = Field(default_factory=lambda: [256])
    slo_ttft_p99_ms: float = 2000
    slo_tpot_p99_ms: float = 80


class GenerateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployments: int = Field(ge=1, le=5000)
    seed: int = 0
    namespaces: list[str] = Field(min_length=1)
    templates: list[Template] = Field(min_length=1)


def expand_generated(raw: dict[str, Any], *, source: str) -> dict[str, Any]:
    try:
        spec = GenerateSpec.model_validate(raw["generate"])
    except ValidationError as exc:
        err = exc.errors()[0]
        where = "generate." + ".".join(str(p) for p in err["loc"])
        raise InputError(err["msg"], source=source, field=where) from exc
    pools = {p["name"]: p for p in raw.get("pools", [])}
    free = {name: int(p["nodes"]) * int(p["gpus_per_node"]) for name, p in pools.items()}
    for t in spec.templates:
        for name in t.pools:
            if name not in pools:
                raise InputError(
                    f"unknown pool {name!r}", source=source, field=f"generate.templates.{t.name}"
                )
    rng = np.random.default_rng(spec.seed)
    weights = np.array([t.weight for t in spec.templates])
    out = list(raw.get("deployments", []))
    for i in range(spec.deployments):
        t = spec.templates[int(rng.choice(len(spec.templates), p=weights / weights.sum()))]
        candidates = [p for p in t.pools if free[p] >= t.tensor_parallel]
        if not candidates:
            continue
        pool = candidates[int(rng.integers(len(candidates)))]
        max_rep = min(t.replicas[1], free[pool] // t.tensor_parallel)
        replicas = int(rng.integers(t.replicas[0], max(t.replicas[0], max_rep) + 1))
        replicas = max(1, min(replicas, max_rep))
        free[pool] -= replicas * t.tensor_parallel
        per_replica = float(np.exp(rng.uniform(np.log(t.rate_per_replica[0]), np.log(t.rate_per_replica[1]))))
        in_mean = float(rng.uniform(*t.input_mean))
        out_mean = float(rng.uniform(*t.output_mean))
        out.append(
            {
                "name": f"{t.name}-{i:03d}",
                "namespace": spec.namespaces[i % len(spec.namespaces)],
                "pool": pool,
                "config": {
                    "model": t.model,
                    "tensor_parallel": t.tensor_parallel,
                    "replicas": replicas,
                    "max_num_seqs": int(rng.choice(t.max_num_seqs)),
                },
                "workload": {
                    "input_len": {
                        "kind": "lognormal",
                        "mean": round(in_mean),
                        "std": round(in_mean * 0.4),
                        "min": 16,
                        "max": 32000,
                    },
                    "output_len": {
                        "kind": "lognormal",
                        "mean": round(out_mean),
                        "std": round(out_mean * 0.4),
                        "min": 4,
                        "max": 4000,
                    },
                    "rate_per_s": round(per_replica * replicas, 3),
                    "daily": {"peak_hour": float(rng.integers(8, 20)), "peak": 1.25, "trough": 0.6},
                },
                "slo": {"ttft_p99_ms": t.slo_ttft_p99_ms, "tpot_p99_ms": t.slo_tpot_p99_ms},
            }
        )
    return {k: v for k, v in raw.items() if k != "generate"} | {"deployments": out}
