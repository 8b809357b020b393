"""``simkit info``: what a model (or any simkit artifact directory) is."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .common import MODEL_HELP, echo_json, handle_errors


def register(app: typer.Typer) -> None:
    app.command("info", help="Describe a model: backbone, size, pooling, vocabulary, heads. JSON on stdout.")(
        handle_errors(info)
    )


def info(model: str | None = typer.Argument(None, help=MODEL_HELP)) -> None:
    from simkit.encoder import default_model_path
    from simkit.models.checkpoint import load_model

    path = model or default_model_path()
    m, tok, meta = load_model(path)
    cfg = m.config
    n_params = sum(p.numel() for p in m.parameters())
    out = {
        "model": str(path),
        "source": meta.source,
        "backbone": meta.backbone,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "vocab_size": tok.vocab_size,
        "parameters": n_params,
        "pooling": meta.pooling,
        "max_seq_length": meta.max_seq_length,
        "has_pooler": m.pooler is not None,
        "pooler_activation": meta.pooler_activation if m.pooler is not None else None,
        "can_generate": m.lm_head is not None,
        "pre_tokenize": meta.pre_tokenize,
    }
    card = Path(path) / "README.md"
    if card.is_file():
        out["model_card"] = str(card)
    if meta.extra:
        out["extra"] = json.loads(json.dumps(meta.extra))
    echo_json(out)
