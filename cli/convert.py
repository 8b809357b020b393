"""``simkit convert``: foreign checkpoints -> simkit model directories."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import choice, echo_json, handle_errors, sub_app

convert_app = sub_app("Convert checkpoints from other toolkits into simkit model directories.")


def register(app: typer.Typer) -> None:
    convert_app.command("bert4keras", help=HELP)(handle_errors(bert4keras))
    app.add_typer(convert_app, name="convert")


HELP = """Convert a bert4keras / Google BERT TensorFlow checkpoint (no TensorFlow needed).

CKPT_DIR holds bert_config.json, vocab.txt and the checkpoint (*.index + *.data-*): SimBERT,
RoFormer-Sim, BERT or RoFormer, with Google (bert/...) or bert4keras (Embedding-Token, ...)
variable names. A simplified vocabulary (fewer embedding rows than vocab.txt lines) is rebuilt
with bert4keras' rule or read from --keep-tokens / CKPT_DIR/keep_tokens.json.

\b
Example:  simkit convert bert4keras chinese_simbert_L-12_H-768_A-12 -o simbert/
"""


def bert4keras(
    ckpt_dir: Path = typer.Argument(..., help="Directory with bert_config.json, vocab.txt, the checkpoint."),
    output: Path = typer.Option(..., "--output", "-o", help="simkit model directory to write."),
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="Checkpoint prefix if the directory holds several."),
    backbone: str | None = typer.Option(None, "--backbone", help="bert or roformer (default: from the checkpoint)."),
    keep_tokens: str | None = typer.Option(None, "--keep-tokens", help="JSON list of kept token ids, 'auto' or 'none'."),
    pooler_activation: str = typer.Option("linear", "--pooler-activation", help="linear (SimBERT, RoFormer-Sim) or tanh (Google BERT).",
                                          parser=choice("linear", "tanh")),
    pooling: str | None = typer.Option(None, "--pooling", help="Default pooling saved with the model (default: pooler)."),
    max_seq_length: int = typer.Option(64, "--max-seq-length", help="Default token limit saved with the model."),
    save_dtype: str = typer.Option("fp32", "--save-dtype", help="Storage dtype of the weights (fp16: half the size).",
                                   parser=choice("fp32", "fp16")),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    from simkit.models.bert4keras import convert_bert4keras

    model, tok, info = convert_bert4keras(
        ckpt_dir, output, checkpoint=checkpoint, backbone=backbone, keep_tokens=keep_tokens,
        pooler_activation=pooler_activation, pooling=pooling, max_seq_length=max_seq_length,
        overwrite=overwrite, dtype=save_dtype,
    )
    echo_json({"output": str(output), "backbone": info.backbone, "naming": info.extra["naming"],
               "vocab_size": tok.vocab_size, "keep_tokens": info.extra["keep_tokens"],
               "layers": model.config.num_hidden_layers, "hidden_size": model.config.hidden_size,
               "has_pooler": model.pooler is not None, "has_lm_head": model.lm_head is not None,
               "pooling": info.pooling, "pooler_activation": info.pooler_activation})
