"""What every command shares: error handling, JSON output, option types."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

import click
import typer

from simkit.errors import InputError, ParameterError, SimkitError

log = logging.getLogger("simkit.cli")


# Plain click help: rich's panels cut "[default: ...]" (read as markup) and re-flow examples.
APP_SETTINGS = {"no_args_is_help": True, "rich_markup_mode": None,
                "context_settings": {"help_option_names": ["-h", "--help"], "max_content_width": 80}}


def choice(*values: str):
    """A parser for an option with fixed values: a bad value is a usage error (exit 2) that
    lists the valid ones."""

    def parse(value: str) -> str:
        if value not in values:
            raise typer.BadParameter(f"{value!r}; expected one of: {', '.join(values)}")
        return value

    return parse


FORMATS = ("auto", "txt", "jsonl", "tsv", "csv")


def usage_error(message: str) -> click.UsageError:
    """A usage error (exit 2), e.g. for options that exclude each other."""
    return click.UsageError(message)


def sub_app(help: str) -> typer.Typer:
    """A command group with the settings every simkit group shares."""
    return typer.Typer(help=help, **APP_SETTINGS)


def handle_errors(fn: Callable) -> Callable:
    """Turn simkit's errors (and missing extras) into one stderr line: exit 2 for a bad option
    value or a usage error, 1 for bad input."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ParameterError as e:  # a value the options set: a usage error, like click's own checks
            typer.echo(f"simkit: usage error: {option_message(e, fn)}", err=True)
            raise typer.Exit(2) from None
        except (SimkitError, ImportError) as e:
            typer.echo(f"simkit: error: {e}", err=True)
            raise typer.Exit(1) from None
        except click.UsageError as e:  # options that exclude each other, found in the body
            typer.echo(f"simkit: usage error: {e.format_message()}", err=True)
            raise typer.Exit(2) from None
        except OSError as e:  # disk full, read-only file system, permissions: one line, no traceback
            from simkit.fsutil import os_error

            typer.echo(f"simkit: error: {os_error(e, doing='read or write')}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def option_message(e: ParameterError, command: Callable) -> str:
    """``--batch-size 0: expected an int >= 1`` when an option of ``command`` sets the
    parameter the library refused; the library's ``batch_size=0; ...`` otherwise."""
    param = inspect.signature(command).parameters.get(e.name)
    if param is None:
        return str(e)
    decls = list(getattr(param.default, "param_decls", None) or ())
    # In Annotated[..., typer.Option("--name")] the first name lands in the OptionInfo's default
    try:
        hints = get_type_hints(command, include_extras=True)
    except Exception:  # an annotation that does not resolve must not turn into a traceback
        hints = {}
    for info in getattr(hints.get(e.name), "__metadata__", ()):
        decls += [getattr(info, "default", None), *(getattr(info, "param_decls", None) or ())]
    decls = [d for d in decls if isinstance(d, str) and d.startswith("-")]
    if not decls:
        return str(e)
    value = e.value if isinstance(e.value, (int, float)) else repr(e.value)
    # "None" cannot be typed on the command line: leaving the option out is how to get it
    expected = re.sub(r"^None or | or None\b.*$", "", e.expected)
    return f"{max(decls, key=len)} {value}: expected {expected}"


def echo_json(obj: Any, pretty: bool = True) -> None:
    """Data on stdout: one JSON document (pretty) or one JSONL line."""
    text = json.dumps(obj, ensure_ascii=False, indent=2 if pretty else None)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def progress_enabled() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.INFO


MODEL_HELP = ("A simkit model dir, a Hugging Face dir, or a hub id. [default: $SIMKIT_MODEL, else the "
              "bundled model]")
THREADS_HELP = "torch intra-op threads. [default: the CPUs this process may use]"


def make_pipeline(model: str | None = None, threads: int | None = None, **options):
    """The :class:`~simkit.pipeline.Pipeline` of ``--model`` (default: the bundled one)."""
    from simkit.pipeline import Pipeline
    from simkit.threads import configure_threads

    configure_threads(threads)
    return Pipeline(model, num_threads=threads, **options)


def refuse_existing(output: Path, overwrite: bool) -> None:
    """Fail before any work when OUTPUT exists and --overwrite was not given, or when it is not
    a simkit artifact that --overwrite may replace (the kind is checked again when writing)."""
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it")
    if os.path.lexists(output):
        from simkit.fsutil import check_replaceable

        check_replaceable(output, None)
