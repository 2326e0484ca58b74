"""`servewise ...`: the command-line entry point.

Each command group lives in ``servewise/commands/<group>.py`` and exposes ``register(app)``.
Modules import heavy libraries (kubernetes, langgraph, ray) inside the command functions so
``servewise --help`` stays fast. ``--json`` outputs: docs/json-output.md.
"""

from __future__ import annotations

import importlib
import sys

import typer

from servewise.errors import ServewiseError

COMMAND_MODULES = (
    "demo",
    "perf",
    "sim",
    "telemetry",
    "fleet",
    "analyze",
    "workflow",
    "study",
    "console",
    "bench",
)

app = typer.Typer(
    name="servewise",
    help="Autonomous optimizer for LLM inference: predict, analyze, propose, approve, apply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"servewise.commands.{_name}").register(app)


def main() -> None:
    try:
        app()
    except ServewiseError as exc:  # a clear one-line error, never a traceback, for expected failures
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
