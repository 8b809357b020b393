"""The ``simkit`` command: a thin typer app over the library.

Data goes to stdout (JSON / JSONL), progress bars and logs to stderr. Exit codes: 0 success,
1 an error in the input, a model or an artifact (one line on stderr naming what and where),
2 a usage error (bad option or argument).
"""

from __future__ import annotations

import logging
import warnings

import typer

from . import convert as _convert
from . import encode as _encode
from . import eval as _eval
from . import export as _export
from . import index as _index
from . import info as _info
from . import paraphrase as _paraphrase
from . import serve as _serve
from . import train as _train
from . import transforms as _transforms
from .common import APP_SETTINGS

app = typer.Typer(
    name="simkit",
    help="Chinese sentence embeddings and semantic search (SimBERT / RoFormer-Sim, "
    "BERT-whitening, FAISS / LSH, Chinese STS evaluation).",
    add_completion=False,
    pretty_exceptions_enable=False,
    **APP_SETTINGS,
)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More logging on stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr; no progress bars."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", force=True)
    if not verbose:  # a warning is one line, like an error; --verbose keeps its file and line
        warnings.formatwarning = _one_line_warning
    for noisy in ("transformers", "huggingface_hub", "urllib3", "filelock", "faiss"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"simkit: warning: {message}\n"


# Order of --help: the workflow of a user (encode, search, generate, evaluate, train, tools).
_encode.register(app)
_index.register(app)
_paraphrase.register(app)
_eval.register(app)
_train.register(app)
_transforms.register(app)
_convert.register(app)
_export.register(app)
_info.register(app)
_serve.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
