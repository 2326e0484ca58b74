"""Shared helpers for commands: JSON to stdout, tables and logs to stderr, files the user names."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console

from servewise.errors import InputError


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


@contextmanager
def writing(path: Path, flag: str) -> Iterator[None]:
    """Write to ``path``, which the user named with ``flag`` (``--out``, ``--report``, ``--jsonl``...):
    an OSError (a missing or read-only folder, a file where a folder should be, ``/proc``) becomes an
    input error naming the flag and the path (``error: field '--out': cannot write /proc/x: No such
    file or directory``, exit 2) instead of a traceback."""
    try:
        yield
    except OSError as exc:
        cause = exc.strerror or str(exc)
        if exc.filename is not None and str(exc.filename) != str(path):
            cause += f" ({exc.filename})"
        raise InputError(f"cannot write {path}: {cause}", field=flag) from exc


def _make_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))


def output_dir(path: Path, flag: str) -> Path:
    """Create the output folder ``path`` (with its parents) before any work is done, so one that
    cannot be written is refused at once, as ``writing`` says."""
    with writing(path, flag):
        _make_dir(path)
    return path


def output_file(path: Path, flag: str) -> Path:
    """Create the folder of the output file ``path`` (with its parents) before any work is done, so
    a file that cannot be written there is refused at once, as ``writing`` says."""
    with writing(path, flag):
        _make_dir(path.parent)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    return path
