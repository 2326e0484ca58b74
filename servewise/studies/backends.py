"""Where chunks of points are evaluated: in this process, a local process pool, or a Ray cluster.

Every backend runs the same ``evaluate_chunk`` on the same chunks and yields each chunk's rows as
it finishes (any order); the runner stores them. Because a point's seed depends only on the study
seed and the point's index, the rows are identical whichever backend computed them.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any
from urllib.parse import urlparse

from servewise.errors import BackendUnavailableError, InputError
from servewise.studies.evaluating import Row, evaluate_chunk
from servewise.studies.study_file import Study

log = logging.getLogger(__name__)
Chunk = list[tuple[int, dict[str, Any]]]
RAY_CONNECT_TIMEOUT_S = 5.0


class Backend:
    """Evaluate chunks; ``run`` yields each chunk's rows as soon as it is done."""

    name = "serial"
    workers = 1

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        return None

    def run(self, study: Study, chunks: Iterable[Chunk]) -> Iterator[list[Row]]:
        for chunk in chunks:
            yield evaluate_chunk(study, chunk)


class PoolBackend(Backend):
    """A local process pool (spawned workers: safe next to threads such as the progress bar)."""

    name = "pool"

    def __init__(self, workers: int | None = None) -> None:
        import multiprocessing

        self.workers = workers or os.cpu_count() or 1
        self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def run(self, study: Study, chunks: Iterable[Chunk]) -> Iterator[list[Row]]:
        pending: set[Future[list[Row]]] = set()
        queue = iter(chunks)  # pulled lazily: a 10-million-point study never sits in memory as points
        chunk = next(queue, None)
        while chunk is not None or pending:
            while chunk is not None and len(pending) < 2 * self.workers:  # bounded in-flight work
                pending.add(self._pool.submit(evaluate_chunk, study, chunk))
                chunk = next(queue, None)
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()


def _check_reachable(address: str) -> None:
    """Fail fast, naming the address, when nothing listens there (ray.init would hang or retry)."""
    if address in ("auto", "local"):
        return
    url = urlparse(address if "://" in address else f"ray://{address}")
    host, port = url.hostname, url.port
    if not host or not port:
        raise InputError(f"Ray address {address!r} is not host:port or ray://host:port", field="--ray")
    try:
        with socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        raise BackendUnavailableError(
            f"Ray at {address} does not answer ({exc.strerror or exc}) within {RAY_CONNECT_TIMEOUT_S:.0f} s; "
            "points already finished are stored: rerun with --workers N (or another --ray) and the same "
            "--out to resume"
        ) from exc


class RayBackend(Backend):
    """Ray tasks, one per chunk; ``address='local'`` starts a local Ray on this machine."""

    name = "ray"

    def __init__(self, address: str, workers: int | None = None) -> None:
        import ray

        _check_reachable(address)
        self._started = not ray.is_initialized()
        try:
            if address == "local":
                ray.init(
                    num_cpus=workers or os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                )
            else:
                ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise BackendUnavailableError(f"cannot join Ray at {address}: {exc}") from exc
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._ray = ray
        self._task = ray.remote(evaluate_chunk)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()

    def run(self, study: Study, chunks: Iterable[Chunk]) -> Iterator[list[Row]]:
        ray = self._ray
        study_ref = ray.put(study)
        queue = iter(chunks)
        chunk = next(queue, None)
        pending: list[Any] = []
        while chunk is not None or pending:
            while chunk is not None and len(pending) < 4 * self.workers:
                pending.append(self._task.remote(study_ref, chunk))
                chunk = next(queue, None)
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)


def make_backend(workers: int | None = None, ray_address: str | None = None, serial: bool = False) -> Backend:
    if ray_address:
        return RayBackend(ray_address, workers)
    if serial or workers == 1:
        return Backend()
    return PoolBackend(workers)
