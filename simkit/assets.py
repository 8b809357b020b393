"""Files shipped inside the package: the demo corpus and (once trained) the default model."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError

ASSETS = Path(__file__).parent / "data"
DEFAULT_MODEL = ASSETS / "default-model"


def default_model_dir() -> str:
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise InputError(
            "no model given and no bundled default model in this installation "
            f"({DEFAULT_MODEL}); pass --model / model_name_or_path or set SIMKIT_MODEL"
        )
    return str(DEFAULT_MODEL)


def demo_corpus() -> Path:
    return ASSETS / "demo_corpus.txt"


def demo_sts() -> Path:
    """Forty hand-written Chinese pairs (label 1 similar, 0 not), for the demo's STS step."""
    return ASSETS / "demo_sts.tsv"
