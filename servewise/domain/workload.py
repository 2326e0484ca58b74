"""Load offered to a deployment: arrivals, prompt/output lengths, prefix sharing, SLOs."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class LengthDistribution(BaseModel):
    """Token-length distribution. ``fixed`` uses ``mean``; others are clipped to [min, max]."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["fixed", "uniform", "normal", "lognormal", "exponential"] = "fixed"
    mean: float = Field(gt=0, le=2_000_000)
    std: float = Field(default=0.0, ge=0)
    min: int = Field(default=1, ge=1)
    max: int = Field(default=131072, ge=1)

    @model_validator(mode="after")
    def _check(self) -> LengthDistribution:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) > max ({self.max})")
        return self

    @classmethod
    def fixed(cls, n: int) -> LengthDistribution:
        return cls(kind="fixed", mean=n, min=1, max=max(n, 1))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` integer lengths."""
        if self.kind == "fixed":
            out = np.full(n, self.mean)
        elif self.kind == "uniform":
            half = self.std * np.sqrt(3.0)
            out = rng.uniform(self.mean - half, self.mean + half, n)
        elif self.kind == "normal":
            out = rng.normal(self.mean, self.std, n)
        elif self.kind == "exponential":
            out = rng.exponential(self.mean, n)
        else:  # lognormal with the given mean and std of the lengths themselves
            var = np.log1p((self.std / self.mean) ** 2)
            out = rng.lognormal(np.log(self.mean) - var / 2.0, np.sqrt(var), n)
        return np.clip(np.rint(out), self.min, self.max).astype(np.int64)


class Workload(BaseModel):
    """Offered load. Either an open-loop ``arrival_rate_per_s`` or a closed-loop ``concurrency``."""

    model_config = ConfigDict(frozen=True)

    input_len: LengthDistribution = Field(default_factory=lambda: LengthDistribution.fixed(1024))
    output_len: LengthDistribution = Field(default_factory=lambda: LengthDistribution.fixed(256))
    arrival_rate_per_s: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    arrival: Literal["poisson", "gamma", "uniform"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0, description="gamma shape; <1 is burstier than Poisson")
    prefix_share: float = Field(default=0.0, ge=0, le=1, description="fraction of each prompt shared")
    num_requests: int | None = Field(default=None, ge=1)
    trace: str | None = Field(default=None, description="CSV of arrival_s,input_len,output_len")

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.arrival_rate_per_s is None and self.concurrency is None and self.trace is None:
            raise ValueError("workload needs arrival_rate_per_s, concurrency or trace")
        return self

    @classmethod
    def fixed(
        cls, input_len: int, output_len: int, *, concurrency: int | None = None, rate: float | None = None
    ) -> Workload:
        return cls(
            input_len=LengthDistribution.fixed(input_len),
            output_len=LengthDistribution.fixed(output_len),
            concurrency=concurrency,
            arrival_rate_per_s=rate,
        )


class SLO(BaseModel):
    """Latency objectives; ``None`` means no objective on that metric."""

    model_config = ConfigDict(frozen=True)

    ttft_p50_ms: float | None = Field(default=None, gt=0)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    tpot_p99_ms: float | None = Field(default=None, gt=0)
    e2e_p99_ms: float | None = Field(default=None, gt=0)

    def objectives(self) -> dict[str, float]:
        """The objectives this SLO sets, by field name (metrics without one left out)."""
        return {name: limit for name, limit in self.model_dump().items() if limit is not None}

    def violations(self, measured: dict[str, float]) -> list[str]:
        """Names of objectives that ``measured`` (same keys as the fields) breaks."""
        return [
            name for name, limit in self.objectives().items() if name in measured and measured[name] > limit
        ]
