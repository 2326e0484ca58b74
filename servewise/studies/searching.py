"""Optuna search over a study's axes for its objective, under its constraints.

Trials are asked in batches of a fixed size (``sampling.batch``, not the number of workers), each
batch is evaluated on the backend, then told back in index order, so the same seed proposes the
same points whichever backend ran them. On resume the stored rows are told back without being
evaluated again; the sampler then proposes exactly what an uninterrupted run would have.
"""

from __future__ import annotations

import logging

from servewise.studies.backends import Backend
from servewise.studies.evaluating import Row
from servewise.studies.sampling import allowed_values, make_space
from servewise.studies.storing import ResultStore
from servewise.studies.study_file import KNOWN_AXES, Study

log = logging.getLogger(__name__)


def feasible(study: Study, row: Row) -> bool:
    """No error, the objective known, and every metric constraint met."""
    if row.get("error"):
        return False
    if study.spec.objective and row.get(study.spec.objective.metric) is None:
        return False
    return all(c.holds(row.get(c.field)) for c in study.parsed_constraints if c.field not in KNOWN_AXES)


def run_optuna(
    study: Study, store: ResultStore, backend: Backend, size: int, progress: bool
) -> tuple[int, int, int]:
    import optuna

    from servewise.studies.running import Progress, chunked

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = study.spec
    assert spec.objective is not None and spec.sampling.n is not None  # checked at load
    space = make_space(study)
    allowed = allowed_values(study, space)
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        name: optuna.distributions.CategoricalDistribution(
            [v for v, ok in zip(vals, mask, strict=True) if ok]
        )
        for name, vals, mask in zip(space.names, space.values, allowed, strict=True)
    }
    sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, spec.sampling.n))
    search = optuna.create_study(direction="minimize", sampler=sampler)
    stored = {int(r["index"]): r for r in store.rows()}
    total, evaluated, failed = spec.sampling.n, 0, 0
    bar = Progress(total - len(stored), progress, f"{spec.name} (optuna, {backend.name})")
    index = 0
    try:
        while index < total:
            trials = [search.ask(dists) for _ in range(min(spec.sampling.batch, total - index))]
            items = [(index + k, {**space.fixed, **t.params}) for k, t in enumerate(trials)]
            rows: dict[int, Row] = {i: stored[i] for i, _ in items if i in stored}
            todo = [it for it in items if it[0] not in rows]
            for chunk_rows in backend.run(study, chunked(todo, size)):
                store.write(chunk_rows)
                evaluated += len(chunk_rows)
                failed += sum(1 for r in chunk_rows if r.get("error"))
                bar.advance(len(chunk_rows))
                rows.update({int(r["index"]): r for r in chunk_rows})
            for k, trial in enumerate(trials):
                row = rows[index + k]
                if feasible(study, row):
                    search.tell(trial, spec.objective.sign * float(row[spec.objective.metric]))
                else:
                    search.tell(trial, state=optuna.trial.TrialState.FAIL)
            index += len(trials)
    finally:
        bar.close()
    return total, evaluated, failed
