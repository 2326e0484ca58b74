"""Run a study: sample points, skip the ones already stored, evaluate the rest, store as they finish.

``run_study`` is what ``servewise study run`` calls. Results land in ``out_dir`` part by part, so
stopping it (Ctrl-C, a lost Ray cluster) loses at most the chunks in flight; running it again with
the same ``out_dir`` resumes, on any backend.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servewise.studies.backends import Backend, Chunk, make_backend
from servewise.studies.evaluating import Row
from servewise.studies.sampling import make_space, sample_codes
from servewise.studies.storing import ResultStore
from servewise.studies.study_file import Study

log = logging.getLogger(__name__)
DEFAULT_CHUNK = {"analytical": 2000, "simulate": 2, "policy": 1}


@dataclass(frozen=True)
class RunSummary:
    out_dir: Path
    points: int
    evaluated: int
    skipped: int
    failed: int
    backend: str
    workers: int
    seconds: float
    startup_seconds: float  # loading the study store and starting the backend (pool workers, Ray)
    rows: list[Row]


def chunked(items: list[tuple[int, dict[str, Any]]], size: int) -> list[Chunk]:
    return [items[k : k + size] for k in range(0, len(items), size)]


class Progress:
    """A rich progress bar on stderr with rate and ETA (a no-op when disabled)."""

    def __init__(self, total: int, enabled: bool, label: str) -> None:
        self._bar: Any = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, rate="")

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)
            speed = self._bar.tasks[0].speed
            self._bar.update(self._task, rate=f"{speed:,.0f} pts/s" if speed else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def run_study(
    study: Study,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    serial: bool = False,
    chunk_size: int | None = None,
    progress: bool = True,
    report: bool = True,
) -> RunSummary:
    """Evaluate every point of ``study`` not yet in ``out_dir``; then write the report folder."""
    started = time.perf_counter()
    store = ResultStore(out_dir, study.fingerprint, study.spec.name)
    size = chunk_size or DEFAULT_CHUNK[study.spec.evaluator]
    done = store.finished()
    with make_backend(workers, ray_address, serial) as backend:
        startup = time.perf_counter() - started
        if study.spec.sampling.method == "optuna":
            from servewise.studies.searching import run_optuna

            total, evaluated, failed = run_optuna(study, store, backend, size, progress)
        else:
            total, evaluated, failed = _run_sample(study, store, backend, done, size, progress)
        name, n_workers = backend.name, backend.workers
    rows = store.consolidate()
    if report:
        from servewise.studies.reporting import write_report

        write_report(study, Path(out_dir), rows, backend=name)
    return RunSummary(
        out_dir=Path(out_dir),
        points=total,
        evaluated=evaluated,
        skipped=total - evaluated,
        failed=sum(1 for r in rows if r.get("error")),
        backend=name,
        workers=n_workers,
        seconds=time.perf_counter() - started,
        startup_seconds=startup,
        rows=rows,
    )


def _run_sample(
    study: Study, store: ResultStore, backend: Backend, done: set[int], size: int, progress: bool
) -> tuple[int, int, int]:
    codes = sample_codes(study)
    space = make_space(study)
    todo = codes.shape[0] - len(done)
    if done:
        log.info("resuming: %d of %d points already stored", len(done), codes.shape[0])

    def chunks() -> Iterator[Chunk]:  # built as the backend asks for them
        chunk: Chunk = []
        for i in range(codes.shape[0]):
            if i not in done:
                chunk.append((i, space.point(codes[i])))
                if len(chunk) == size:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    evaluated = failed = 0
    bar = Progress(todo, progress, f"{study.spec.name} ({backend.name})")
    try:
        for rows in _stored(backend.run(study, chunks()), store):
            evaluated += len(rows)
            failed += sum(1 for r in rows if r.get("error"))
            bar.advance(len(rows))
    finally:
        bar.close()
    return int(codes.shape[0]), evaluated, failed


def _stored(results: Iterator[list[Row]], store: ResultStore) -> Iterator[list[Row]]:
    for rows in results:
        store.write(rows)
        yield rows
