"""A real Prometheus for tests and benches: Debian's ``prometheus`` on 127.0.0.1, a free port,
a temporary data directory, optional backfill (``promtool tsdb create-blocks-from openmetrics``)
and optional scrape targets.

    with PrometheusServer(backfill=[history_file], scrape=["127.0.0.1:9400"]) as prom:
        PrometheusSource(prom.url).snapshot()
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
import yaml


class PrometheusUnavailable(RuntimeError):
    """The prometheus/promtool binaries are not installed (tests skip with this reason)."""


def binaries() -> tuple[str, str]:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not tool:
        raise PrometheusUnavailable(
            "Debian's prometheus/promtool are not installed (make test installs them)"
        )
    return prom, tool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def backfill(openmetrics_file: Path | str, data_dir: Path | str) -> None:
    """Write TSDB blocks for ``openmetrics_file`` into ``data_dir``."""
    _, tool = binaries()
    proc = subprocess.run(
        [tool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics_file), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"promtool backfill of {openmetrics_file} failed: {proc.stderr[-2000:]}")


class PrometheusServer:
    """Start/stop a Prometheus process (context manager)."""

    def __init__(
        self,
        *,
        backfill: list[Path | str] | None = None,
        scrape: list[str] | None = None,
        scrape_interval: str = "1s",
        honor_labels: bool = True,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.binary, _ = binaries()
        self.backfill_files = list(backfill or [])
        self.scrape = list(scrape or [])
        self.scrape_interval = scrape_interval
        self.honor_labels = honor_labels
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = Path(tempfile.mkdtemp(prefix="servewise-prom-"))
        self.data_dir = self.workdir / "data"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrometheusServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for f in self.backfill_files:
            backfill(f, self.data_dir)
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [
                {
                    "job_name": "servewise-twin",
                    "honor_labels": self.honor_labels,
                    "static_configs": [{"targets": self.scrape}],
                }
            ]
            if self.scrape
            else [],
        }
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=3650d",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited early: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus did not become ready in {self.startup_timeout_s}s: {self.log_tail()}")

    def log_tail(self, n: int = 2000) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
