"""``simkit export``: simkit models for other toolkits (sentence-transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import MODEL_HELP, echo_json, handle_errors

export_app = typer.Typer(help="Export simkit models for other toolkits.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    export_app.command("sentence-transformers", help=HELP)(handle_errors(sentence_transformers))
    app.add_typer(export_app, name="export")


HELP = """Write a directory that stock sentence-transformers loads: SentenceTransformer(OUT).

The backbone (BERT or RoFormer) goes through transformers; the pooling becomes ST's Pooling
(cls, last-avg / mean; first-last-avg as WeightedLayerPooling + mean; SimBERT's pooler as CLS
+ a Dense with identity activation); a fitted transform (whitening, JL projection,
normalisation) becomes Dense / Normalize modules. What ST cannot express (jieba word
segmentation, other transforms) is refused, naming the reason. A summary goes to stdout.

Examples:
  simkit export sentence-transformers my-model -o st-model
  simkit export sentence-transformers my-model -o st-white --pooling first-last-avg --transform white/
"""


def sentence_transformers(
    model: str | None = typer.Argument(None, help=MODEL_HELP),
    output: Path = typer.Option(..., "--output", "-o", help="Directory to write (atomically)."),
    pooling: str | None = typer.Option(None, "--pooling", "-p", help="cls, pooler, last-avg, mean or first-last-avg (default: the model's)."),
    transform: Path | None = typer.Option(None, "--transform", help="A saved transform (simkit transforms fit) appended after the pooling."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", help="Token limit (default: the model's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    from simkit.encoder import default_model_path
    from simkit.export import export_sentence_transformers
    from simkit.transforms import load_transform

    chain = load_transform(transform) if transform is not None else None
    out = export_sentence_transformers(model or default_model_path(), output, pooling=pooling,
                                       transform=chain, max_seq_length=max_seq_length, overwrite=overwrite)
    modules = json.loads((out / "modules.json").read_text(encoding="utf-8"))
    sbert = json.loads((out / "sentence_bert_config.json").read_text(encoding="utf-8"))
    echo_json({"output": str(out), "modules": [m["type"].rsplit(".", 1)[-1] for m in modules],
               "max_seq_length": sbert["max_seq_length"],
               "dim": chain.n_components_ if chain is not None else _dim(out)})


def _dim(out: Path) -> int:
    return json.loads((out / "config.json").read_text(encoding="utf-8"))["hidden_size"]
