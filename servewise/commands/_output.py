"""Shared helpers for commands: JSON to stdout, tables and logs to stderr."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console


def _console(stderr: bool = False) -> Console:
    """A console as wide as the terminal; written to a file or a pipe (CI logs, ``make demo > log``),
    160 columns unless ``COLUMNS`` says otherwise, where rich's 80 would wrap tables a word a line."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=160 if wide else None)


err_console = _console(stderr=True)
out_console = _console()


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def print_json(document: Any) -> None:
    """One JSON document on stdout (docs/json-output.md)."""
    if isinstance(document, BaseModel):
        document = document.model_dump(mode="json")
    sys.stdout.write(json.dumps(document, default=_default, indent=2) + "\n")
    sys.stdout.flush()
