"""Scenario files of the embedded twin: node pools, deployments with their load, and a seed.

A scenario is YAML validated by the pydantic models below; errors name the file and the field.
Shipped scenarios live in ``servewise/scenarios/<name>.yaml``; a path to any YAML file works too.
Large fleets can be described compactly with ``generate:`` (expanded by seeded code, see
``servewise.cluster.sim_generate``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servewise.domain import SLO, LengthDistribution, ServingConfig, Workload
from servewise.errors import InputError, UnknownIdError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$")
    gpu: str
    nodes: int = Field(ge=0)
    gpus_per_node: int = Field(ge=1, le=16)
    zone: str = ""
    location: Literal["cloud", "edge"] = "cloud"
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    network_latency_ms: float = Field(default=0.0, ge=0)

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class DailyPattern(_Strict):
    """Arrival-rate multiplier over the day: a cosine from ``trough`` to ``peak`` at ``peak_hour``
    (UTC), or 24 explicit ``hourly`` multipliers (linearly interpolated)."""

    peak_hour: float = Field(default=14.0, ge=0, lt=24)
    peak: float = Field(default=1.0, gt=0)
    trough: float = Field(default=1.0, gt=0)
    hourly: list[float] | None = Field(default=None, min_length=24, max_length=24)

    def multiplier(self, hour_of_day: float) -> float:
        if self.hourly is not None:
            i = int(hour_of_day) % 24
            frac = hour_of_day - math.floor(hour_of_day)
            return self.hourly[i] * (1 - frac) + self.hourly[(i + 1) % 24] * frac
        phase = math.cos(2 * math.pi * (hour_of_day - self.peak_hour) / 24.0)
        return self.trough + (self.peak - self.trough) * (1 + phase) / 2


class Burst(_Strict):
    """A traffic burst every day at ``start_hour`` (UTC) for ``duration_min`` minutes."""

    start_hour: float = Field(ge=0, lt=24)
    duration_min: float = Field(gt=0, le=24 * 60)
    multiplier: float = Field(gt=0)

    def active(self, hour_of_day: float) -> bool:
        end = self.start_hour + self.duration_min / 60.0
        return self.start_hour <= hour_of_day < end or hour_of_day < end - 24


class LoadSpec(_Strict):
    """Traffic offered to a whole deployment (split evenly over its ready replicas)."""

    input_len: LengthDistribution
    output_len: LengthDistribution
    rate_per_s: float = Field(gt=0, description="base arrival rate of the deployment, requests/s")
    daily: DailyPattern = Field(default_factory=DailyPattern)
    bursts: list[Burst] = Field(default_factory=list)
    prefix_share: float = Field(default=0.0, ge=0, le=1)

    def rate_at(self, epoch_s: float) -> float:
        hour = (epoch_s % 86400.0) / 3600.0
        rate = self.rate_per_s * self.daily.multiplier(hour)
        for burst in self.bursts:
            if burst.active(hour):
                rate *= burst.multiplier
        return rate

    def as_workload(self) -> Workload:
        return Workload(
            input_len=self.input_len,
            output_len=self.output_len,
            arrival_rate_per_s=self.rate_per_s,
            prefix_share=self.prefix_share,
        )


class DeploymentSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]*$", max_length=50)
    namespace: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9\-]*$")
    pool: str
    config: dict[str, Any] = Field(description="ServingConfig fields; 'gpu' defaults to the pool's GPU")
    workload: LoadSpec
    slo: SLO = Field(default_factory=SLO)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("slo", mode="before")
    @classmethod
    def _known_objectives(cls, value: Any) -> Any:
        """A misspelled objective (``ttft_p99``) would silently drop it: name it instead."""
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(SLO.model_fields))
            if unknown:
                raise ValueError(
                    f"unknown objective(s) {', '.join(unknown)}; known: {', '.join(SLO.model_fields)}"
                )
        return value


class TruthSpec(_Strict):
    """How far the twin's hidden truth is from the catalog defaults, and measurement noise."""

    efficiency_scale: float = Field(default=0.15, ge=0, le=1)
    noise: float = Field(default=0.03, ge=0, le=0.5, description="relative std of per-step noise")
    rollout_delay_s: float = Field(default=120.0, ge=0)


class Scenario(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    start: str | None = Field(default=None, description="ISO time the twin's clock starts at")
    truth: TruthSpec = Field(default_factory=TruthSpec)
    pools: list[PoolSpec] = Field(min_length=1)
    deployments: list[DeploymentSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_refs(self) -> Scenario:
        pools = {p.name for p in self.pools}
        if len(pools) != len(self.pools):
            raise ValueError("pool names must be unique")
        seen: set[tuple[str, str]] = set()
        for d in self.deployments:
            if d.pool not in pools:
                raise ValueError(f"deployment {d.name!r}: unknown pool {d.pool!r}; pools are {sorted(pools)}")
            key = (d.namespace, d.name)
            if key in seen:
                raise ValueError(f"deployment {d.namespace}/{d.name} is listed twice")
            seen.add(key)
        return self

    def pool(self, name: str) -> PoolSpec:
        for p in self.pools:
            if p.name == name:
                return p
        raise UnknownIdError(f"no pool {name!r} in scenario {self.name!r}", field="pool")

    def serving_config(self, dep: DeploymentSpec) -> ServingConfig:
        data = {"gpu": self.pool(dep.pool).gpu, **dep.config}
        return ServingConfig.model_validate(data)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def scenario_names() -> list[str]:
    root = resources.files("servewise.scenarios")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_text(name_or_path: str | Path) -> tuple[str, str]:
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith((".yaml", ".yml")) or path.exists():
        if not path.exists():
            raise InputError("scenario file does not exist", source=str(path))
        return str(path), path.read_text()
    res = resources.files("servewise.scenarios").joinpath(f"{text_name}.yaml")
    if not res.is_file():
        raise UnknownIdError(
            f"unknown scenario {text_name!r}; shipped scenarios: {', '.join(scenario_names())} "
            "(or give a path to a .yaml file)",
            field="scenario",
        )
    return f"scenario '{text_name}'", res.read_text()


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load, expand (``generate:``) and validate a scenario; errors name the file and the field."""
    source, text = _read_text(name_or_path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", source=source) from exc
    if not isinstance(raw, dict):
        raise InputError("a scenario must be a mapping with 'pools' and 'deployments'", source=source)
    if "generate" in raw:
        from servewise.cluster.sim_generate import expand_generated

        raw = expand_generated(raw, source=source)
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        where, msg = _located(errors[0])
        # the first error fills the message's field; any others follow, each with its own field path
        more = "".join(f"; field '{w}': {m}" for w, m in map(_located, errors[1:]))
        raise InputError(f"{msg}{more} ({len(errors)} error(s))", source=source, field=where) from exc
    _check_ids(scenario, source)
    return scenario


def _located(err: Mapping[str, Any]) -> tuple[str, str]:
    """A pydantic error as (its field path, its message without pydantic's "Value error, " prefix)."""
    return ".".join(str(p) for p in err["loc"]), str(err["msg"]).removeprefix("Value error, ")


def _check_ids(scenario: Scenario, source: str) -> None:
    """Catalog ids and ServingConfig fields are checked up front so errors name the deployment."""
    from servewise.perf.catalog import get_catalog
    from servewise.perf.memory import plan_memory

    catalog = get_catalog()
    for i, pool in enumerate(scenario.pools):
        try:
            catalog.gpu(pool.gpu)
        except UnknownIdError as exc:
            raise InputError(str(exc), source=source, field=f"pools.{i}.gpu") from exc
    for i, dep in enumerate(scenario.deployments):
        try:
            config = scenario.serving_config(dep)
        except ValidationError as exc:
            errors = [
                (".".join(filter(None, (f"deployments.{i}.config", w))), m)
                for w, m in map(_located, exc.errors())
            ]
            more = "".join(f"; field '{w}': {m}" for w, m in errors[1:])
            count = f" ({len(errors)} error(s))" if len(errors) > 1 else ""
            raise InputError(
                f"{dep.name}: {errors[0][1]}{more}{count}", source=source, field=errors[0][0]
            ) from exc
        try:
            model, _ = catalog.resolve_model(config.model)
            hw = catalog.gpu(config.gpu)
            seq_len = int(dep.workload.input_len.mean + dep.workload.output_len.mean)
            plan = plan_memory(model, hw, config, seq_len)
        except InputError as exc:  # an unknown id, a parallelism the GPU's nodes cannot hold
            raise InputError(
                f"{dep.name}: {exc.detail}", source=source, field=f"deployments.{i}.config"
            ) from exc
        if not plan.fits:
            raise InputError(
                f"{dep.name} does not fit: {plan.reason}", source=source, field=f"deployments.{i}.config"
            )
