"""What every command shares: error handling, JSON output, option types."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from simkit.errors import InputError, SimkitError

log = logging.getLogger("simkit.cli")


def handle_errors(fn: Callable) -> Callable:
    """Turn simkit's errors (and missing extras) into one stderr line and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SimkitError, ImportError) as e:
            typer.echo(f"simkit: error: {e}", err=True)
            raise typer.Exit(1) from None
        except OSError as e:  # disk full, read-only file system, permissions: one line, no traceback
            from simkit.fsutil import os_error

            typer.echo(f"simkit: error: {os_error(e, doing='read or write')}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def echo_json(obj: Any, pretty: bool = True) -> None:
    """Data on stdout: one JSON document (pretty) or one JSONL line."""
    text = json.dumps(obj, ensure_ascii=False, indent=2 if pretty else None)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def progress_enabled() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.INFO


MODEL_HELP = "Model: a simkit model dir, a Hugging Face dir, or a hub id. Default: the bundled model (or $SIMKIT_MODEL)."


def refuse_existing(output: Path, overwrite: bool) -> None:
    """Fail before any work when OUTPUT exists and --overwrite was not given, or when it is not
    a simkit artifact that --overwrite may replace (the kind is checked again when writing)."""
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it")
    if os.path.lexists(output):
        from simkit.fsutil import check_replaceable

        check_replaceable(output, None)
