"""The typed state of an optimization run (checkpointed after every node) and its options."""

from __future__ import annotations

from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from servewise.errors import InputError
from servewise.telemetry.promql import window_seconds


class RunOptions(BaseModel):
    """How a run was started; kept in its state so any process can resume it."""

    model_config = ConfigDict(extra="forbid")

    cluster: str = "sim:demo"
    prometheus: str | None = None
    policy_path: str | None = Field(default=None, description="auto-approve policy YAML")
    stop_after_propose: bool = Field(default=False, description="--dry-run: propose, never apply")
    window: str = Field(default="15m", description="telemetry window for analysis")
    benchmark: bool = Field(default=True, description="the optimizer validates candidates with benchmarks")
    max_benchmark_minutes: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="cap on a confirming benchmark run's traffic (SearchPolicy)",
    )
    verify_window_s: float = Field(
        default=600.0, ge=0, allow_inf_nan=False, description="post-change observation window"
    )
    rollout_timeout_s: float = Field(default=900.0, gt=0)
    regression_tolerance: float = Field(
        default=0.25, ge=0, description="measured may exceed predicted by this"
    )
    use_llm: bool = True
    deployments: list[str] = Field(
        default_factory=list,
        description="optimize only these NAMESPACE/NAME (empty: every one with findings)",
    )

    @field_validator("deployments")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for key in keys:
            namespace, _, name = key.partition("/")
            if not namespace or not name or "/" in name:
                raise InputError(
                    f"a deployment is NAMESPACE/NAME as `servewise fleet` lists them (e.g. chat/chat-assistant),"
                    f" got {key!r}",
                    field="--deployment",
                )
        return keys

    @field_validator("window")
    @classmethod
    def _a_duration(cls, window: str) -> str:
        window_seconds(window)  # before any run exists: 'abc' is an input error naming --window
        return window


class OptimizationState(TypedDict, total=False):
    """JSON-friendly dicts only, so any checkpointer can store it and any process read it."""

    run_id: str
    options: dict[str, Any]
    status: str
    snapshot: dict[str, Any]
    findings: list[dict[str, Any]]
    proposals: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    narrative: str
    narrative_by: str
    llm_usage: dict[str, float]
    auto_approved: list[str]
    proposed_at: str  # ISO instant the gate checks the auto-approve policy at
    decision: dict[str, Any] | None
    approved: list[dict[str, Any]]
    dry_runs: list[dict[str, Any]]
    applied: list[dict[str, Any]]
    verification: list[dict[str, Any]]
    rolled_back: list[str]
    notes: list[str]
    errors: list[str]
    report: dict[str, Any]
