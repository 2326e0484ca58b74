"""Human decisions at the approval gate and the bounded auto-approve policy.

A ``Decision`` approves, rejects, or approves with edits (knob overrides per proposal). Edited
knobs are re-validated through ``ServingConfig`` (types, ranges, power-of-two TP) and the memory
plan (weights and KV cache must fit the GPUs); anything that does not validate is refused with an
error naming the proposal and the knob, and nothing resumes.

An ``AutoApprovePolicy`` (YAML) approves a proposal only when every bound holds: namespace
allowed, never production unless ``allow_production``, each changed knob listed with a maximum
relative change, added $/hour under the cap, and the current time inside a change window.
"""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from servewise.domain import Impact, Proposal, ServingConfig
from servewise.errors import InputError
from servewise.perf.catalog import get_catalog
from servewise.perf.memory import plan_memory

KNOBS = tuple(ServingConfig.model_fields)
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Decision(BaseModel):
    """What an approver answered at the gate (the ``Command(resume=...)`` value)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "reject"]
    actor: str = Field(min_length=1, description="who decided: a person, 'policy:NAME' or 'gitops:PR'")
    comment: str = ""
    proposal_ids: list[str] | None = Field(default=None, description="approve only these; None = all")
    edits: dict[str, dict[str, Any]] = Field(default_factory=dict, description="{proposal_id: {knob: value}}")

    @field_validator("actor")
    @classmethod
    def _someone(cls, actor: str) -> str:
        """A name the audit log can hold someone to: blanks are no one."""
        if not actor.strip():
            raise ValueError("the approver's name is blank")
        return actor.strip()


def resolve_decision(proposals: list[Proposal], decision: Decision) -> list[Proposal]:
    """The proposals to apply (edited and re-validated); raises InputError naming what is wrong."""
    by_id = {p.id: p for p in proposals}
    for pid in [*(decision.proposal_ids or []), *decision.edits]:
        if pid not in by_id:
            raise InputError(f"no pending proposal {pid!r}; pending: {sorted(by_id)}", field="proposal")
    if decision.action == "reject":
        return []
    chosen = [p for p in proposals if decision.proposal_ids is None or p.id in decision.proposal_ids]
    out = []
    for p in chosen:
        edits = decision.edits.get(p.id)
        out.append(edit_proposal(p, edits) if edits else p)
    return out


def edit_proposal(proposal: Proposal, edits: dict[str, Any]) -> Proposal:
    unknown = sorted(set(edits) - set(KNOBS))
    if unknown:
        raise InputError(
            f"proposal {proposal.id}: unknown knob(s) {unknown}; knobs: {list(KNOBS)}", field="--edit"
        )
    try:
        config = proposal.proposed.with_changes(**edits)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InputError(f"proposal {proposal.id}: edited config is invalid: {msgs}", field="--edit") from exc
    _check_fits(proposal, config)
    note = ", ".join(f"{k}={v}" for k, v in edits.items())
    predicted = _stale_prediction(proposal, config)
    return proposal.model_copy(
        update={
            "proposed": config,
            "summary": f"{proposal.summary} (edited: {note}; ${predicted.cost_per_hour_after:.2f}/h after)",
            "predicted": predicted,
            "measured": None,
            "manifest_patch": [],  # the proposed config's; the dry run of the edited one makes its own
        }
    )


def _check_fits(proposal: Proposal, edited: ServingConfig) -> None:
    """An edit must leave a config whose weights and KV cache fit its GPUs (the memory plan the
    optimizer and the twin use), else it would be applied only to crash with OOM."""
    catalog = get_catalog()
    try:
        plan = plan_memory(catalog.resolve_model(edited.model)[0], catalog.gpu(edited.gpu), edited)
    except InputError as exc:
        raise InputError(f"proposal {proposal.id}: edited config: {exc.detail}", field="--edit") from exc
    if not plan.fits:
        raise InputError(
            f"proposal {proposal.id}: the edited config does not fit in GPU memory: {plan.reason}",
            field="--edit",
        )


def _stale_prediction(proposal: Proposal, edited: ServingConfig) -> Impact:
    """The optimizer's latency predictions do not hold for an edited config: drop them (verification
    then checks the SLOs only) and cost it by its GPUs: at the price per GPU-hour the proposal's
    costs imply for the proposed or current GPU (its pool's), else at the catalog's."""
    pred = proposal.predicted

    def price(gpu: str) -> float:
        for config, cost in (
            (proposal.proposed, pred.cost_per_hour_after),
            (proposal.current, pred.cost_per_hour_before),
        ):
            if config.gpu == gpu and config.total_gpus:
                return cost / config.total_gpus
        return get_catalog().gpu(gpu).price_per_gpu_hour

    cost_after = price(edited.gpu) * edited.total_gpus
    return Impact(
        cost_per_hour_before=pred.cost_per_hour_before,
        cost_per_hour_after=cost_after,
        uncertainty_pct=pred.uncertainty_pct,
        validated_by="edited: latency not re-predicted",
    )


def parse_edits(items: list[str], default_proposal: str | None) -> dict[str, dict[str, Any]]:
    """``--edit [PROPOSAL:]knob=value`` flags into Decision.edits (values parsed as YAML scalars)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        lhs, eq, raw = item.partition("=")
        target, _, knob = lhs.rpartition(":")
        if not eq or not knob.strip():
            raise InputError(f"expected [PROPOSAL:]knob=value, got {item!r}", field="--edit")
        pid = target or default_proposal
        if pid is None:
            raise InputError(
                f"{item!r}: several proposals are pending; write PROPOSAL:knob=value", field="--edit"
            )
        out.setdefault(pid, {})[knob.strip()] = yaml.safe_load(raw)
    return out


class ChangeWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: list[Day] = Field(default_factory=lambda: list(DAYS))
    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def contains(self, when: datetime) -> bool:
        local = when.astimezone(ZoneInfo(self.timezone))
        day = DAYS[local.weekday()]
        t = local.time()
        inside = self.start <= t < self.end if self.start <= self.end else (t >= self.start or t < self.end)
        return day in self.days and inside


class AutoApprovePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "auto"
    namespaces: list[str] = Field(min_length=1, description="namespaces where changes may be auto-approved")
    production_namespaces: list[str] = Field(default_factory=lambda: ["production", "prod"])
    allow_production: bool = False
    max_relative_change: dict[str, float] = Field(
        default_factory=dict, description="knob -> max |new-old|/old; a changed knob not listed blocks"
    )
    max_added_cost_per_hour: float = Field(default=0.0, ge=0)
    change_windows: list[ChangeWindow] = Field(default_factory=list, description="empty = any time")

    @field_validator("max_relative_change")
    @classmethod
    def _knobs(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(KNOBS))
        if unknown:
            raise ValueError(f"unknown knob(s) {unknown}; knobs: {list(KNOBS)}")
        if any(v < 0 for v in value.values()):
            raise ValueError("relative changes must be >= 0")
        return value

    @classmethod
    def load(cls, path: Path) -> AutoApprovePolicy:
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise InputError(f"cannot read policy: {exc}", source=str(path)) from exc
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML: {exc}", source=str(path)) from exc
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
            raise InputError(f"invalid auto-approve policy: {msgs}", source=str(path)) from exc

    @property
    def actor(self) -> str:
        return f"policy:{self.name}"

    def reasons_to_refuse(self, proposal: Proposal, now: datetime) -> list[str]:
        """Empty when the policy approves ``proposal`` at ``now``; else every bound it breaks."""
        ns = proposal.ref.namespace
        out = []
        if ns in self.production_namespaces and not self.allow_production:
            out.append(f"namespace {ns} is production and the policy does not allow production")
        if ns not in self.namespaces:
            out.append(f"namespace {ns} is not in {self.namespaces}")
        before, after = proposal.current.model_dump(), proposal.proposed.model_dump()
        for knob in KNOBS:
            old, new = before[knob], after[knob]
            if old == new:
                continue
            limit = self.max_relative_change.get(knob)
            if limit is None:
                out.append(f"knob {knob} changes ({old} -> {new}) and the policy does not allow it")
            elif isinstance(old, int | float) and isinstance(new, int | float) and not isinstance(old, bool):
                rel = abs(new - old) / abs(old) if old else float("inf")
                if rel > limit + 1e-12:
                    out.append(
                        f"knob {knob} changes by {rel:.0%} ({old} -> {new}), above the limit {limit:.0%}"
                    )
        added = proposal.predicted.cost_per_hour_after - proposal.predicted.cost_per_hour_before
        if added > self.max_added_cost_per_hour + 1e-9:
            out.append(f"adds ${added:.2f}/hour, above the limit ${self.max_added_cost_per_hour:.2f}/hour")
        if proposal.risk.startswith("high"):  # not benchmarked, unconfirmed, or its dry run refused
            out.append(f"its risk is {proposal.risk.split(';')[0].split('(')[0].strip()}: a person decides")
        if self.change_windows and not any(w.contains(now) for w in self.change_windows):
            out.append(f"{now.isoformat()} is outside every change window")
        return out
